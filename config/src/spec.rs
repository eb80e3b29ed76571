// SPDX-License-Identifier: Apache-2.0
//! `Spec`: the whole configuration after parsing, every object with its place.

use std::ops::{Deref, Range};
use std::sync::Arc;

use crate::diag::Location;
use crate::schema::*;
use crate::source::SourceFile;

/// Where an object came from: its file, its span, and its path in the file (`node`,
/// `service[3]`), so later checks can point at one of its values: field spans are looked
/// up lazily, only when a diagnostic needs one.
#[derive(Clone, Debug)]
pub struct Meta {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
    pub path: Box<str>,
}

impl PartialEq for Meta {
    fn eq(&self, other: &Meta) -> bool {
        self.file.path == other.file.path && self.span == other.span && self.path == other.path
    }
}

/// A configuration object shared between the parse cache and the specs built from it.
pub type Shared<T> = Arc<Located<T>>;

/// An object of the configuration and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub meta: Meta,
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The parsed configuration of all config dirs.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub files: Vec<Arc<SourceFile>>,
    pub node: Option<Shared<Node>>,
    pub encryption: Option<Shared<Encryption>>,
    pub bandwidth: Option<Shared<BandwidthManager>>,
    pub flows: Option<Shared<Flows>>,
    pub bgp: Option<Shared<Bgp>>,
    pub endpoints: Vec<Shared<Endpoint>>,
    pub namespaces: Vec<Shared<Namespace>>,
    pub identities: Vec<Shared<IdentityPin>>,
    pub services: Vec<Shared<Service>>,
    pub policies: Vec<Shared<Policy>>,
    pub peers: Vec<Shared<PeerNode>>,
    pub lb_pools: Vec<Shared<LbPool>>,
    pub routes: Vec<Shared<Route>>,
}

impl Spec {
    /// The place of an object.
    pub fn locate(&self, meta: &Meta) -> Location {
        meta.file.location(meta.span.start)
    }

    /// The place of one of an object's fields (`"addresses[0]"`, `"ports[1].name"`),
    /// falling back to the object.
    pub fn locate_field(&self, meta: &Meta, path: &str) -> Location {
        let file = &meta.file;
        file.field_span(&format!("{}.{path}", meta.path))
            .map_or_else(|| self.locate(meta), |span| file.location(span.start))
    }

    /// The node settings, defaults where `[node]` is absent.
    pub fn node(&self) -> Node {
        self.node
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| Node {
                socket_lb: true,
                ..Node::default()
            })
    }

    pub fn flows(&self) -> Flows {
        self.flows
            .as_ref()
            .map(|f| f.value.clone())
            .unwrap_or_default()
    }

    /// This node's name: `[node].name`, else `default_name` (the host name).
    pub fn node_name(&self, default_name: &str) -> String {
        self.node
            .as_ref()
            .and_then(|n| n.name.clone())
            .unwrap_or_else(|| default_name.to_string())
    }

    /// Labels of a namespace: its `[[namespace]]` labels plus the implicit
    /// `kubernetes.io/metadata.name = NAME`.
    pub fn namespace_labels(&self, name: &str) -> crate::types::Labels {
        let mut labels = self
            .namespaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels
            .0
            .insert("kubernetes.io/metadata.name".into(), name.to_string());
        labels
    }
}
