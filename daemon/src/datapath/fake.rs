// SPDX-License-Identifier: Apache-2.0
//! An in-memory [`MapIo`] for tests: maps as sorted byte maps, with injectable failures.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::MapIo;
use crate::compile::Attachment;

#[derive(Debug, Default)]
pub struct FakeMaps {
    pub maps: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub attached: BTreeSet<Attachment>,
    pub maglev: BTreeMap<u16, Vec<u32>>,
    /// Fail one write after this many more successful ones (simulates a full map);
    /// later writes (the rollback) succeed again.
    pub fail_after_writes: Option<usize>,
    pub writes: usize,
}

impl FakeMaps {
    fn write(&mut self) -> io::Result<()> {
        if let Some(n) = self.fail_after_writes {
            if n == 0 {
                self.fail_after_writes = None;
                return Err(io::Error::from_raw_os_error(libc::E2BIG));
            }
            self.fail_after_writes = Some(n - 1);
        }
        self.writes += 1;
        Ok(())
    }
}

impl MapIo for FakeMaps {
    fn update(&mut self, map: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.write()?;
        self.maps
            .entry(map.to_string())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, map: &str, key: &[u8]) -> io::Result<()> {
        self.write()?;
        if let Some(m) = self.maps.get_mut(map) {
            m.remove(key);
        }
        Ok(())
    }

    fn dump(&self, map: &str) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .maps
            .get(map)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn set_maglev(&mut self, rev_nat_index: u16, table: &[u32]) -> io::Result<()> {
        self.write()?;
        self.maglev.insert(rev_nat_index, table.to_vec());
        Ok(())
    }

    fn delete_maglev(&mut self, rev_nat_index: u16) -> io::Result<()> {
        self.write()?;
        self.maglev.remove(&rev_nat_index);
        Ok(())
    }

    fn maglev_tables(&self) -> io::Result<BTreeMap<u16, Vec<u32>>> {
        Ok(self.maglev.clone())
    }

    fn attach(&mut self, at: &Attachment) -> io::Result<()> {
        self.attached.insert(at.clone());
        Ok(())
    }

    fn detach(&mut self, at: &Attachment) -> io::Result<()> {
        self.attached.remove(at);
        Ok(())
    }

    fn attachments(&self) -> io::Result<Vec<Attachment>> {
        Ok(self.attached.iter().cloned().collect())
    }
}
