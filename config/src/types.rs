// SPDX-License-Identifier: Apache-2.0
//! Value types of the configuration language, each parsed (and so validated) from its
//! TOML string form: CIDRs, durations, bandwidths, protocols, label keys and values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize};

/// Implements `Deserialize` through `FromStr`, so a bad value is reported at its place
/// with the parser's message.
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An IP prefix: network address and prefix length. Host bits must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix_len: Cidr::max_len(addr),
        }
    }

    /// The address as the top bits of a u128 (IPv4 in the top 32).
    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4()
            && (Cidr::bits(addr) & Cidr::mask(self.prefix_len))
                == Cidr::bits(self.addr) & Cidr::mask(self.prefix_len)
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR `{s}`: `{addr}` is not an IP address"))?;
        let max = Cidr::max_len(addr);
        let prefix_len =
            match len {
                None => max,
                Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| {
                    format!("invalid CIDR `{s}`: prefix length must be 0..={max}")
                })?,
            };
        let c = Cidr { addr, prefix_len };
        let bits = Cidr::bits(addr);
        // IPv4 sits in the top 32 bits, so one 128-bit mask serves both families.
        if bits & !Cidr::mask(prefix_len) != 0 {
            let network = Cidr::network_of(addr, prefix_len);
            return Err(format!(
                "invalid CIDR `{s}`: host bits are set (did you mean `{network}/{prefix_len}`?)"
            ));
        }
        Ok(c)
    }
}

impl Cidr {
    fn network_of(addr: IpAddr, len: u8) -> IpAddr {
        let masked = Cidr::bits(addr) & Cidr::mask(len);
        match addr {
            IpAddr::V4(_) => IpAddr::V4(((masked >> 96) as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(masked.into()),
        }
    }
}
deserialize_from_str!(Cidr);

/// A duration written like `"90s"`, `"3h"`, `"1h30m"`, `"500ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Duration(pub StdDuration);

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration `{s}`: expected e.g. \"90s\", \"5m\", \"3h\", \"1h30m\", \"500ms\""
            )
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = StdDuration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => StdDuration::from_millis(n),
                "s" => StdDuration::from_secs(n),
                "m" => StdDuration::from_secs(n * 60),
                "h" => StdDuration::from_secs(n * 3600),
                "d" => StdDuration::from_secs(n * 86400),
                _ => return Err(bad()),
            };
            total += unit;
            rest = &rest[unit_len..];
        }
        Ok(Duration(total))
    }
}
deserialize_from_str!(Duration);

/// A bandwidth in bits per second, written `"100M"` (SI: k, M, G, T) or a plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Bandwidth {
    pub bits_per_second: u64,
}

impl FromStr for Bandwidth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid bandwidth `{s}`: expected bits per second like \"100M\", \"1G\", \"500k\""
            )
        };
        let t = s.trim();
        let (num, mult) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
            Some('M') => (&t[..t.len() - 1], 1e6),
            Some('G') => (&t[..t.len() - 1], 1e9),
            Some('T') => (&t[..t.len() - 1], 1e12),
            _ => (t, 1.0),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        Ok(Bandwidth {
            bits_per_second: (n * mult).round() as u64,
        })
    }
}
deserialize_from_str!(Bandwidth);

/// Transport protocols a port can name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
    Icmp,
    /// Every protocol (policies only).
    Any,
}

impl Protocol {
    /// The IANA protocol number (0 for `any`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
            Protocol::Any => 0,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        })
    }
}

/// Labels: Kubernetes-style keys and values, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        for (k, v) in &map {
            check_label_key(k).map_err(serde::de::Error::custom)?;
            check_label_value(k, v).map_err(serde::de::Error::custom)?;
        }
        Ok(Labels(map))
    }
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 characters.
pub fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if !prefix_ok || !is_label_name(name) {
        return Err(format!(
            "invalid label key `{k}`: use [prefix/]name, name up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub fn check_label_value(k: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err(format!(
            "invalid value `{v}` for label `{k}`: up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric"
        ))
    }
}

/// An object name (endpoints, services, policies, …): a DNS label, as in Kubernetes.
pub fn check_object_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name `{name}`: use lowercase letters, digits, '-' and '.', starting and ending alphanumeric"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_reject_host_bits() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().prefix_len, 8);
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix_len, 32);
        assert_eq!("2001:db8::/32".parse::<Cidr>().unwrap().prefix_len, 32);
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn cidr_containment() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(c.covers(&"192.0.2.128/25".parse().unwrap()));
        assert!(!c.covers(&"192.0.0.0/16".parse().unwrap()));
        assert!(c.overlaps(&"192.0.0.0/16".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn durations() {
        assert_eq!("90s".parse::<Duration>().unwrap().0.as_secs(), 90);
        assert_eq!("3h".parse::<Duration>().unwrap().0.as_secs(), 10800);
        assert_eq!("1h30m".parse::<Duration>().unwrap().0.as_secs(), 5400);
        assert_eq!("500ms".parse::<Duration>().unwrap().0.as_millis(), 500);
        for bad in ["", "10", "s", "3x", "1.5h", "-1s"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bandwidths_are_si_bits() {
        assert_eq!(
            "100M".parse::<Bandwidth>().unwrap().bits_per_second,
            100_000_000
        );
        assert_eq!(
            "1.5G".parse::<Bandwidth>().unwrap().bits_per_second,
            1_500_000_000
        );
        assert_eq!(
            "500k".parse::<Bandwidth>().unwrap().bits_per_second,
            500_000
        );
        assert!("fast".parse::<Bandwidth>().is_err());
        assert!("0M".parse::<Bandwidth>().is_err());
    }

    #[test]
    fn label_syntax() {
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(check_label_key("-app").is_err());
        assert!(check_label_key("Bad_Prefix/app").is_err());
        assert!(check_label_value("k", "").is_ok());
        assert!(check_label_value("k", "a b").is_err());
    }
}
