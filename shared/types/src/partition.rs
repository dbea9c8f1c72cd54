//! Tenants and the stable tenant → partition hash.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The tenant (merchant) a row belongs to, in canonical text form: integers
/// in decimal without leading zeros, strings as they are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl TenantId {
    /// The tenant id for a captured value; `None` for NULL (a row without a
    /// tenant cannot be routed).
    pub fn from_value(v: &crate::Value) -> Option<Self> {
        if v.is_null() {
            None
        } else {
            Some(TenantId(v.key_text()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partition number in `0..partitions`.
pub type Partition = u32;

/// Stable partition of a tenant: FNV-1a 64 of the tenant text, mod
/// `partitions`. Stable across processes, versions and platforms; changing it
/// re-routes every merchant, so it never changes.
pub fn partition_of(tenant: &TenantId, partitions: u32) -> Partition {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in tenant.0.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    (h % u64::from(partitions.max(1))) as Partition
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // Fixed expectations: these values must never change between releases.
        let t = TenantId("42".into());
        let p = partition_of(&t, 8);
        assert_eq!(p, partition_of(&TenantId("42".into()), 8));
        assert!(p < 8);
        assert_eq!(partition_of(&t, 1), 0);
    }

    #[test]
    fn tenants_spread_over_partitions() {
        let mut counts = [0u32; 8];
        for m in 0..8000 {
            counts[partition_of(&TenantId(m.to_string()), 8) as usize] += 1;
        }
        for c in counts {
            assert!((700..1300).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn integer_and_decimal_text_route_alike() {
        let a = TenantId::from_value(&crate::Value::I(17)).unwrap();
        let b = TenantId::from_value(&crate::Value::U(17)).unwrap();
        assert_eq!(a, b);
        assert!(TenantId::from_value(&crate::Value::Null).is_none());
    }
}
