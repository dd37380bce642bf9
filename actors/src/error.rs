//! The crate's one error type. Declines are not errors (they are
//! [`protocol::domain::DeclineReason`]s), and a stopped shard is counted in
//! the shard stats rather than returned; what is left is configuration.

/// What went wrong outside a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A mailbox must hold at least one message.
    #[error("mailbox_capacity must be at least 1")]
    MailboxCapacityZero,
}
