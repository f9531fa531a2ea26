//! `wol`: power on by Wake-on-LAN, a UDP "magic packet" (six `0xff` bytes, then the network
//! card's MAC sixteen times) sent to a broadcast address.
//!
//! It can only power on, and cannot tell whether the machine woke: the startup plan's wait for
//! the node to answer is the check. Give the node a BMC controller too if it has one.

use std::net::{Ipv4Addr, SocketAddr};

use async_trait::async_trait;
use hecate_core::node::{Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput};
use hecate_core::preflight::Check;
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
    #[schemars(range(min = 1))]
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

/// One IPv4 route of the kernel's main table, as `/proc/net/route` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    iface: String,
    destination: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    prefix: u32,
}

/// The routes of a `/proc/net/route` text that are up. Its addresses are hexadecimal numbers in
/// the kernel's byte order, so their little-endian bytes are the address.
fn parse_routes(text: &str) -> Vec<Route> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gw, flags, mask) =
                (f.first()?, hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(3)?)?, hex(f.get(7)?)?);
            (flags & RTF_UP != 0).then(|| Route {
                iface: (*iface).to_string(),
                destination: Ipv4Addr::from(dest.to_le_bytes()),
                gateway: (flags & RTF_GATEWAY != 0).then(|| Ipv4Addr::from(gw.to_le_bytes())),
                prefix: u32::from_le_bytes(mask.to_be_bytes()).count_ones(),
            })
        })
        .collect()
}

/// Where a magic packet to `target` leaves, or why it would not reach the nodes' network: the
/// longest-prefix route for it. The limited broadcast (255.255.255.255) leaves on the default
/// route's interface; a subnet's broadcast address needs an interface on that subnet (a route
/// through a gateway would send it to a router, which does not forward broadcasts).
fn wol_route(routes: &[Route], target: Ipv4Addr) -> Result<&Route, String> {
    let t = u32::from(target);
    let best = routes
        .iter()
        .filter(|r| {
            let mask = if r.prefix == 0 { 0 } else { u32::MAX << (32 - r.prefix.min(32)) };
            t & mask == u32::from(r.destination) & mask
        })
        .max_by_key(|r| r.prefix);
    match best {
        None if target.is_broadcast() => {
            Err("no default route: the limited broadcast 255.255.255.255 has no interface to leave on".into())
        }
        None => Err(format!("no interface faces {target}: the magic packet has no route")),
        Some(r) if target.is_broadcast() => Ok(r),
        Some(Route { gateway: Some(gw), iface, .. }) => Err(format!(
            "{target} is reached only through the gateway {gw} on {iface}: no interface is on that subnet, and a \
             router does not forward the broadcast"
        )),
        Some(r) => Ok(r),
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

    /// The interface the magic packet would leave on: present, up, on the broadcast address's
    /// subnet. Sends nothing (the kernel's routing table and the interface's state are read).
    async fn preflight(&self, _ops: &[NodeOp]) -> Vec<Check> {
        let target = match self.target.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => {
                return vec![Check::failed("interface", "wake-on-lan needs an ipv4 broadcast address")];
            }
        };
        let table = match tokio::fs::read_to_string("/proc/net/route").await {
            Ok(t) => t,
            Err(e) => return vec![Check::failed("interface", format!("cannot read /proc/net/route: {e}"))],
        };
        let routes = parse_routes(&table);
        let route = match wol_route(&routes, target) {
            Ok(r) => r,
            Err(why) => return vec![Check::failed("interface", why)],
        };
        // `unknown` is what loopback and many virtual interfaces report while they work
        let state = tokio::fs::read_to_string(format!("/sys/class/net/{}/operstate", route.iface)).await;
        let state = state.as_deref().map(str::trim).unwrap_or("unknown");
        let check = if matches!(state, "up" | "unknown") {
            Check::ok(
                "interface",
                format!(
                    "the magic packet to {} leaves on {} ({}/{})",
                    self.target, route.iface, route.destination, route.prefix
                ),
            )
        } else {
            Check::failed("interface", format!("{} (the interface for {target}) is {state}", route.iface))
        };
        vec![check]
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
    fn routes_and_where_a_magic_packet_leaves() {
        // as this machine's kernel prints it: a default route through 192.0.2.1 and 192.0.2.0/24 on
        // eth0, plus a down route and a garbled line
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth1\t00000A0A\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                     junk\n";
        let routes = parse_routes(table);
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(routes[0].gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!((routes[1].destination, routes[1].prefix), (Ipv4Addr::new(192, 0, 2, 0), 24));
        let on_subnet = wol_route(&routes, Ipv4Addr::new(192, 0, 2, 255)).expect("eth0's subnet");
        assert_eq!((on_subnet.iface.as_str(), on_subnet.prefix), ("eth0", 24));
        assert_eq!(wol_route(&routes, Ipv4Addr::BROADCAST).expect("default route").prefix, 0);
        let via_router = wol_route(&routes, Ipv4Addr::new(10, 10, 0, 255)).expect_err("only through a gateway");
        assert!(via_router.contains("only through the gateway 192.0.2.1 on eth0"), "{via_router}");
        let alone = parse_routes(&table.lines().take(1).chain(table.lines().skip(2)).collect::<Vec<_>>().join("\n"));
        assert!(wol_route(&alone, Ipv4Addr::BROADCAST).expect_err("no default").contains("no default route"));
        assert!(wol_route(&alone, Ipv4Addr::new(10, 10, 0, 255)).expect_err("no route").contains("no interface faces"));
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
