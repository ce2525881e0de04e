//! The pod lifecycle as a pure state machine. See ARCHITECTURE.md.
