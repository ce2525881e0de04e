//! Pod networking: CNI plugins give each pod sandbox an interface and an IP.

pub mod cni;
pub mod default;
