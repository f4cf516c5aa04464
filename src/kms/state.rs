//! Key states and the transitions between them (the rules of NetBackup's nbkmsutil).

use serde::{Deserialize, Serialize};

/// The life cycle of a key.
/// Serialized by variant index in the keystore (bincode) and by lower-case
/// name in JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Created, never used; can be activated or deleted.
    Prelive,
    /// Encrypts and decrypts; exactly one per group.
    Active,
    /// Decrypts only.
    Inactive,
    /// Neither encrypts nor decrypts: a hold.
    Deprecated,
    /// Neither; the only used state from which a key may be deleted.
    Terminated,
}

impl KeyState {
    /// Lower-case name as printed and parsed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prelive => "prelive",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Deprecated => "deprecated",
            Self::Terminated => "terminated",
        }
    }

    /// Parses a state name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Prelive,
            Self::Active,
            Self::Inactive,
            Self::Deprecated,
            Self::Terminated,
        ]
        .into_iter()
        .find(|st| st.name().eq_ignore_ascii_case(s))
    }

    /// Position on the active..terminated ladder; prelive is off it.
    fn rung(self) -> Option<u8> {
        match self {
            Self::Prelive => None,
            Self::Active => Some(0),
            Self::Inactive => Some(1),
            Self::Deprecated => Some(2),
            Self::Terminated => Some(3),
        }
    }

    /// Whether `self -> to` is allowed: prelive may only become active;
    /// between active and terminated a key moves one step either way; nothing
    /// returns to prelive.
    pub fn can_become(self, to: KeyState) -> bool {
        match (self.rung(), to.rung()) {
            (None, Some(0)) => true,
            (Some(a), Some(b)) => a.abs_diff(b) == 1,
            _ => false,
        }
    }

    /// What to do instead of the refused step `self -> to`.
    pub fn route_to(self, to: KeyState) -> String {
        match (self.rung(), to.rung()) {
            (_, None) => "no key returns to prelive".into(),
            (None, Some(_)) => "a prelive key can only become active".into(),
            (Some(a), Some(b)) => {
                let next = if b > a { a + 1 } else { a - 1 };
                let step = [
                    Self::Active,
                    Self::Inactive,
                    Self::Deprecated,
                    Self::Terminated,
                ][next as usize];
                format!("make it {step} first")
            }
        }
    }

    /// May encrypt new data.
    pub fn can_encrypt(self) -> bool {
        self == Self::Active
    }

    /// May decrypt existing data.
    pub fn can_decrypt(self) -> bool {
        matches!(self, Self::Active | Self::Inactive)
    }

    /// May be deleted from the keystore.
    pub fn can_delete(self) -> bool {
        matches!(self, Self::Prelive | Self::Terminated)
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::KeyState::*;
    use super::*;

    #[test]
    fn nbkmsutil_transitions() {
        assert!(Prelive.can_become(Active));
        for to in [Prelive, Inactive, Deprecated, Terminated] {
            assert!(!Prelive.can_become(to), "prelive -> {to}");
        }
        assert!(Active.can_become(Inactive));
        assert!(!Active.can_become(Deprecated));
        assert!(!Active.can_become(Prelive));
        assert!(Inactive.can_become(Active) && Inactive.can_become(Deprecated));
        assert!(!Inactive.can_become(Terminated));
        assert!(Deprecated.can_become(Inactive) && Deprecated.can_become(Terminated));
        assert!(!Deprecated.can_become(Active));
        assert!(Terminated.can_become(Deprecated));
        assert!(!Terminated.can_become(Inactive) && !Terminated.can_become(Prelive));
    }

    #[test]
    fn usage_and_deletion() {
        assert!(Active.can_encrypt() && !Inactive.can_encrypt());
        assert!(Inactive.can_decrypt() && !Deprecated.can_decrypt() && !Terminated.can_decrypt());
        assert!(Prelive.can_delete() && Terminated.can_delete());
        assert!(!Active.can_delete() && !Inactive.can_delete() && !Deprecated.can_delete());
        assert_eq!(KeyState::parse("DEPRECATED"), Some(Deprecated));
        assert_eq!(KeyState::parse("gone"), None);
    }
}
