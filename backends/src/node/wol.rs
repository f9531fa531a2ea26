//! `wol`: power on by Wake-on-LAN, a UDP "magic packet" (six `0xff` bytes, then the network
//! card's MAC sixteen times) sent to a broadcast address.
//!
//! It can only power on, and cannot tell whether the machine woke: the startup plan's wait for
//! the node to answer is the check. Give the node a BMC controller too if it has one.

use std::net::{Ipv4Addr, SocketAddr};

use async_trait::async_trait;
use hecate_core::node::{Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

/// How many copies of the packet are sent: UDP may drop one, and a card wakes on the first.
const COPIES: usize = 3;

/// A machine woken by a Wake-on-LAN magic packet.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WolConfig {
    /// The MAC address of the network card that wakes the machine (WoL enabled in its firmware):
    /// six hex pairs separated by `:` or `-`, such as `52:54:00:12:34:56`.
    pub mac: String,
    /// Where the packet is sent. The default, 255.255.255.255, leaves on the interface of the
    /// default route; a subnet's broadcast address (such as 10.10.0.255) picks the interface
    /// facing that subnet.
    #[serde(default = "default_broadcast")]
    pub broadcast: Ipv4Addr,
    /// The UDP port: 9 (discard, the usual one) or 7; cards accept the packet on any port.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_broadcast() -> Ipv4Addr {
    Ipv4Addr::BROADCAST
}

fn default_port() -> u16 {
    9
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`) into the card's unicast address.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    let bad = || format!("`mac` {text:?} is not a mac address like `52:54:00:12:34:56`");
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(format!("`mac` {text:?} is not a network card's address (all zero, broadcast or multicast)"));
    }
    Ok(mac)
}

/// The 102-byte magic packet for `mac`.
pub fn magic_packet(mac: [u8; 6]) -> [u8; 102] {
    let mut packet = [0xffu8; 102];
    for copy in packet[6..].chunks_exact_mut(6) {
        copy.copy_from_slice(&mac);
    }
    packet
}

#[typetag::serde(name = "wol")]
impl NodeControllerConfig for WolConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = parse_mac(&self.mac) {
            p.push(e);
        }
        if self.port == 0 {
            p.push("`port` must be from 1 to 65535".into());
        }
        p
    }

    fn build(&self, node: &NodeInfo, _ctx: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
        let mac = parse_mac(&self.mac).map_err(|e| BackendError::new(ErrorKind::Config, e))?;
        Ok(Box::new(WolNode { node: node.name.clone(), mac, target: SocketAddr::from((self.broadcast, self.port)) }))
    }
}

hecate_core::register_backend!(
    NodeController,
    "wol",
    "power on by wake-on-lan magic packet (udp broadcast)",
    WolConfig
);

/// The runtime side of [`WolConfig`].
#[derive(Debug)]
pub struct WolNode {
    node: String,
    mac: [u8; 6],
    target: SocketAddr,
}

impl WolNode {
    async fn wake(&self) -> Result<(), BackendError> {
        let fail = |what: &str, e: std::io::Error| {
            BackendError::with_source(ErrorKind::Unreachable, format!("wake-on-lan to {}: {what}", self.target), e)
        };
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .await
            .map_err(|e| fail("cannot open a socket", e))?;
        // without SO_BROADCAST the kernel refuses to send to a broadcast address
        socket.set_broadcast(true).map_err(|e| fail("cannot allow broadcast", e))?;
        let packet = magic_packet(self.mac);
        for _ in 0..COPIES {
            socket.send_to(&packet, self.target).await.map_err(|e| fail("cannot send the magic packet", e))?;
        }
        tracing::info!(node = %self.node, target = %self.target, "wake-on-lan magic packet sent");
        Ok(())
    }
}

#[async_trait]
impl NodeController for WolNode {
    fn kind(&self) -> &str {
        "wol"
    }

    fn capabilities(&self) -> &[Capability] {
        &[Capability::PowerOn]
    }

    async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError> {
        match op {
            NodeOp::PowerOn => self.wake().await.map(|()| NodeOpOutput::Done),
            other => Err(BackendError::unsupported(format!("wake-on-lan cannot {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("52:54:00:AB:cd:01"), Ok([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]));
        assert_eq!(parse_mac("52-54-00-ab-cd-01"), Ok([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]));
        for bad in
            ["", "52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "5254.00ab.cd01", "52:54:00:ab:cd:0g", "2:54:00:ab:cd:01"]
        {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert!(parse_mac("ff:ff:ff:ff:ff:ff").expect_err("broadcast").contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
    }

    #[test]
    fn packet_layout() {
        let mac = [1, 2, 3, 4, 5, 6];
        let p = magic_packet(mac);
        assert_eq!(&p[..6], &[0xff; 6]);
        assert!(p[6..].chunks(6).all(|c| c == mac));
        assert_eq!(p[6..].chunks(6).count(), 16);
    }

    #[test]
    fn config() {
        let c: WolConfig = serde_saphyr::from_str("mac: 52:54:00:12:34:56\n").expect("parse");
        assert_eq!((c.broadcast, c.port), (Ipv4Addr::BROADCAST, 9));
        assert!(c.validate().is_empty());
        let bad: WolConfig = serde_saphyr::from_str("mac: nope\nport: 0\n").expect("parse");
        assert_eq!(bad.validate().len(), 2);
        assert!(serde_saphyr::from_str::<WolConfig>("mac: 52:54:00:12:34:56\nbroadcast: 10.0.0.256\n").is_err());
    }
}
