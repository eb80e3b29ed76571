// SPDX-License-Identifier: Apache-2.0
//! The bounded ring of recent flows (`[flows].buffer`): the oldest flow makes room for the
//! newest, so memory stays fixed however much traffic there is.

use std::collections::VecDeque;

use super::filter::Filter;
use super::model::Flow;

#[derive(Debug)]
pub struct Store {
    flows: VecDeque<Flow>,
    capacity: usize,
}

impl Store {
    pub fn new(capacity: usize) -> Store {
        Store {
            flows: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Changes the capacity, dropping the oldest flows that no longer fit.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.flows.len() > self.capacity {
            self.flows.pop_front();
        }
    }

    pub fn push(&mut self, f: Flow) {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
        }
        self.flows.push_back(f);
    }

    /// The newest `limit` flows that match, oldest first (`None`: every match).
    pub fn matching(&self, filter: &Filter, limit: Option<usize>) -> Vec<Flow> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut out: Vec<Flow> = self
            .flows
            .iter()
            .rev()
            .filter(|f| filter.matches(f))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Every flow, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter()
    }
}
