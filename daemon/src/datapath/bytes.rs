// SPDX-License-Identifier: Apache-2.0
//! ABI structs ↔ bytes. Sound because every ABI type is `aya::Pod`: `#[repr(C)]`,
//! integers only, no implicit padding (bpf/tests/layout.rs checks the layouts).

use std::collections::BTreeMap;

/// The bytes of a plain-old-data value.
pub fn as_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: no padding, so every byte is initialised; the slice borrows v.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A value from bytes; `None` when the length is wrong.
pub fn from_bytes<T: aya::Pod>(b: &[u8]) -> Option<T> {
    (b.len() == size_of::<T>()).then(|| {
        // SAFETY: length checked; T is Pod, so any bit pattern is valid; unaligned read.
        unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) }
    })
}

/// Decodes a dumped map, skipping entries of the wrong size (a foreign layout).
pub fn decode_map<K: aya::Pod + Ord, V: aya::Pod>(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
) -> BTreeMap<K, V> {
    entries
        .into_iter()
        .filter_map(|(k, v)| Some((from_bytes(&k)?, from_bytes(&v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kldnet_bpf::abi::Lb4Key;

    #[test]
    fn round_trip() {
        let k = Lb4Key {
            address: 0x0a00_0001,
            dport: 80u16.to_be(),
            proto: 6,
            scope: 0,
            backend_slot: 3,
            pad: [0; 2],
        };
        assert_eq!(from_bytes::<Lb4Key>(as_bytes(&k)), Some(k));
        assert_eq!(from_bytes::<Lb4Key>(&[0u8; 3]), None);
    }
}
