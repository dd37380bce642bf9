//! The message type indicator.

use std::fmt;

/// Four ASCII digits: version, class, function, origin.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

impl Mti {
    pub const AUTHORIZATION_REQUEST: Mti = Mti(*b"0100");
    pub const AUTHORIZATION_REQUEST_REPEAT: Mti = Mti(*b"0101");
    pub const AUTHORIZATION_RESPONSE: Mti = Mti(*b"0110");
    pub const FINANCIAL_REQUEST: Mti = Mti(*b"0200");
    pub const FINANCIAL_REQUEST_REPEAT: Mti = Mti(*b"0201");
    pub const FINANCIAL_RESPONSE: Mti = Mti(*b"0210");
    pub const REVERSAL_REQUEST: Mti = Mti(*b"0400");
    pub const REVERSAL_REQUEST_REPEAT: Mti = Mti(*b"0401");
    pub const REVERSAL_RESPONSE: Mti = Mti(*b"0410");
    pub const REVERSAL_ADVICE: Mti = Mti(*b"0420");
    pub const REVERSAL_ADVICE_REPEAT: Mti = Mti(*b"0421");
    pub const REVERSAL_ADVICE_RESPONSE: Mti = Mti(*b"0430");
    pub const NETWORK_MANAGEMENT_REQUEST: Mti = Mti(*b"0800");
    pub const NETWORK_MANAGEMENT_RESPONSE: Mti = Mti(*b"0810");

    /// Four ASCII digits, or `None`.
    pub fn parse(digits: &[u8]) -> Option<Mti> {
        let digits: [u8; 4] = digits.try_into().ok()?;
        digits.iter().all(u8::is_ascii_digit).then_some(Mti(digits))
    }

    /// The four digits.
    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    /// The four digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }

    fn digit(&self, index: usize) -> u8 {
        self.0.get(index).map_or(0, |d| d - b'0')
    }

    /// The message class (second digit): 1 authorization, 2 financial,
    /// 4 reversal, 8 network management.
    pub fn class(&self) -> u8 {
        self.digit(1)
    }

    /// The message function (third digit): 0 request, 1 request response,
    /// 2 advice, 3 advice response.
    pub fn function(&self) -> u8 {
        self.digit(2)
    }

    /// Whether this is a repeat (last digit 1 or 3): the sender did not get
    /// an answer to the original and sends it again.
    pub fn is_repeat(&self) -> bool {
        matches!(self.digit(3), 1 | 3)
    }

    /// Whether this MTI answers another (function 1 or 3).
    pub fn is_response(&self) -> bool {
        matches!(self.function(), 1 | 3)
    }

    /// The MTI of the answer to this request or advice: 0100 and 0101 give
    /// 0110, 0420 and 0421 give 0430. `None` for a response.
    pub fn response(&self) -> Option<Mti> {
        // Function 9 is reserved and has no answer; 9 + 1 is not a digit.
        if self.is_response() || self.function() >= 9 {
            return None;
        }
        let [version, class, function, _] = self.0;
        Some(Mti([version, class, function + 1, b'0']))
    }

    /// The original of a repeat: 0101 gives 0100. Other MTIs are their own original.
    pub fn original(&self) -> Mti {
        let [version, class, function, origin] = self.0;
        if self.is_repeat() {
            Mti([version, class, function, origin - 1])
        } else {
            *self
        }
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_follow_the_message_table() {
        for (request, response) in [
            ("0100", "0110"),
            ("0101", "0110"),
            ("0200", "0210"),
            ("0201", "0210"),
            ("0400", "0410"),
            ("0401", "0410"),
            ("0420", "0430"),
            ("0421", "0430"),
            ("0800", "0810"),
        ] {
            let mti = Mti::parse(request.as_bytes()).unwrap();
            assert_eq!(mti.response().unwrap().as_str(), response);
        }
        assert_eq!(Mti::AUTHORIZATION_RESPONSE.response(), None);
        assert_eq!(Mti::REVERSAL_ADVICE_RESPONSE.response(), None);
        assert_eq!(Mti::parse(b"0190").unwrap().response(), None);
    }

    #[test]
    fn repeats_know_their_original() {
        assert!(Mti::AUTHORIZATION_REQUEST_REPEAT.is_repeat());
        assert!(!Mti::AUTHORIZATION_REQUEST.is_repeat());
        assert_eq!(Mti::REVERSAL_ADVICE_REPEAT.original(), Mti::REVERSAL_ADVICE);
        assert_eq!(Mti::FINANCIAL_REQUEST.original(), Mti::FINANCIAL_REQUEST);
        assert_eq!(Mti::FINANCIAL_REQUEST.class(), 2);
    }

    #[test]
    fn only_four_digits_parse() {
        assert!(Mti::parse(b"010").is_none());
        assert!(Mti::parse(b"01000").is_none());
        assert!(Mti::parse(b"01a0").is_none());
        assert_eq!(format!("{:?}", Mti::parse(b"0800").unwrap()), "Mti(0800)");
    }
}
