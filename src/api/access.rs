//! What a caller may do, decided by the listener it came through and its credentials; routes
//! check it, listeners set it.

/// The kubelet API's two levels of trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every read, watch and log (the plain `--listen` listener, the `view` role).
    View,
    /// Also what runs code or moves bytes in a pod: exec, attach, cp, port-forward (the `admin`
    /// role, and root's unix socket, `--api-socket`, which only root can open).
    Admin,
}

impl Access {
    /// The role's name in tokens, client certificates (O=) and `outpost kubeconfig --role`.
    pub fn role(self) -> &'static str {
        match self {
            Access::View => "view",
            Access::Admin => "admin",
        }
    }

    pub fn from_role(role: &str) -> Option<Self> {
        match role {
            "view" => Some(Access::View),
            "admin" => Some(Access::Admin),
            _ => None,
        }
    }
}
