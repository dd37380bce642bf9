//! Who sent a request: the acquirer a mutual-TLS client certificate named,
//! and the merchants and terminals it may send for. The engine holds every
//! request to it before deciding; the TLS listener only tells who it is.

use std::sync::Arc;

use protocol::ids::{MerchantId, TerminalId};

/// An acquirer the switch knows, as its client certificate identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquirer {
    /// `[acquirers.NAME]`: what the journal records with each transaction,
    /// and part of the keys its requests are matched by (shared, as each
    /// request's duplicate key holds it).
    pub name: Arc<str>,
    merchants: Option<Vec<MerchantId>>,
    terminals: Option<Vec<TerminalId>>,
    /// `[acquirers.NAME] deadline_ms`: its own, where its timeouts differ
    /// from its listener's.
    pub deadline: Option<std::time::Duration>,
}

impl Acquirer {
    /// An acquirer named `name`, held to these merchants (DE42) and
    /// terminals (DE41) when lists are given.
    pub fn new(
        name: String,
        merchants: Option<Vec<MerchantId>>,
        terminals: Option<Vec<TerminalId>>,
    ) -> Acquirer {
        Acquirer {
            name: name.into(),
            merchants,
            terminals,
            deadline: None,
        }
    }

    /// The same acquirer, its requests held to `deadline` rather than
    /// their listener's.
    pub fn with_deadline(self, deadline: Option<std::time::Duration>) -> Acquirer {
        Acquirer { deadline, ..self }
    }

    /// Whether this acquirer may send requests for `merchant` (DE42) at
    /// `terminal` (DE41); an acquirer without lists may send for any.
    pub fn permits(&self, merchant: &MerchantId, terminal: &TerminalId) -> bool {
        let merchant_ok = self
            .merchants
            .as_ref()
            .is_none_or(|allowed| allowed.contains(merchant));
        let terminal_ok = self
            .terminals
            .as_ref()
            .is_none_or(|allowed| allowed.contains(terminal));
        merchant_ok && terminal_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::domain::pad;

    #[test]
    fn an_acquirer_is_held_to_its_merchants_and_terminals() {
        let acquirer = Acquirer {
            name: "north".into(),
            merchants: Some(vec![pad("ACME0000001").unwrap()]),
            terminals: Some(vec![pad("TERM0001").unwrap()]),
            deadline: None,
        };
        let acme = pad("ACME0000001").unwrap();
        let bistro = pad("BISTRO00001").unwrap();
        let t1 = pad("TERM0001").unwrap();
        let t2 = pad("TERM0002").unwrap();
        assert!(acquirer.permits(&acme, &t1));
        assert!(!acquirer.permits(&bistro, &t1));
        assert!(!acquirer.permits(&acme, &t2));
        let open = Acquirer {
            merchants: None,
            terminals: None,
            ..acquirer
        };
        assert!(open.permits(&bistro, &t2));
    }
}
