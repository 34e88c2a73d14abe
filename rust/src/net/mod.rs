//! Container networking through rtnetlink: network namespaces, bridges and veth pairs.
//!
//! Messages are built and parsed by `netlink-packet-route` (the rust-netlink project's typed
//! rtnetlink messages, as used by youki and netavark) and sent on `netlink-sys`'s blocking
//! socket: one request, one acknowledgement, no async runtime. A container's start pays for a
//! handful of netlink round trips (well under a millisecond each) instead of spawning `ip`.
//!
//! A namespace is entered only by a short-lived thread of ours (`setns` on a thread changes
//! that thread alone), so the calling thread never leaves the host's network namespace.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};

/// An IPv4 address with its prefix length, as an interface carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// The container's end of a veth pair, as it is set up inside its network namespace.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Name inside the container (`eth0`).
    pub name: String,
    pub cidr: Cidr,
    /// The default route's gateway, for the container's first network only.
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

fn net_error(what: String, errno: i32) -> Error {
    Error::Net { what, errno }
}

/// A blocking rtnetlink socket in the network namespace of the thread that made it.
struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    fn new() -> Result<Netlink> {
        let os = |e: io::Error| net_error("opening a netlink socket".into(), e.raw_os_error().unwrap_or(0));
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(os)?;
        socket.bind_auto().map_err(os)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(os)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Send one request and wait for its acknowledgement; a kernel refusal is `Err(errno)`.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> std::result::Result<(), i32> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        if let Err(e) = self.socket.send(&buf, 0) {
            return Err(e.raw_os_error().unwrap_or(libc::EIO));
        }
        let mut reply = vec![0u8; 8192];
        loop {
            let n = match self.socket.recv(&mut &mut reply[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            };
            let mut offset = 0;
            while offset < n {
                let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..n]) {
                    Ok(msg) => msg,
                    Err(_) => return Err(libc::EBADMSG),
                };
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = msg.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(-code.get()),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// The index of the link called `name` (0: none).
    fn index(&self, name: &str) -> u32 {
        let Ok(c) = std::ffi::CString::new(name) else { return 0 };
        // SAFETY: c is a valid NUL-terminated string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    }

    fn set_up(&mut self, index: u32, mtu: Option<u32>) -> std::result::Result<(), i32> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    fn add_address(&mut self, index: u32, cidr: Cidr) -> std::result::Result<(), i32> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = cidr.prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(cidr.addr.into()));
        msg.attributes.push(AddressAttribute::Address(cidr.addr.into()));
        let host_bits = 32u32.saturating_sub(cidr.prefix as u32);
        if cidr.prefix < 31 {
            let broadcast = u32::from(cidr.addr) | ((1u64 << host_bits) - 1) as u32;
            msg.attributes.push(AddressAttribute::Broadcast(broadcast.into()));
        }
        match self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Err(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> std::result::Result<(), i32> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = libc::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    fn delete(&mut self, index: u32) -> std::result::Result<(), i32> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
    }
}

/// Run `f` on a new thread that first enters the network namespace `netns`.
fn in_netns<T: Send>(netns: RawFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a thread of our own, which ends after f.
            if unsafe { libc::setns(netns, libc::CLONE_NEWNET) } != 0 {
                return Err(net_error("entering the network namespace".into(), crate::sys::errno()));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(net_error("network thread panicked".into(), 0)))
    })
}

/// A new network namespace with its loopback up, held by the returned fd.
pub fn netns_new() -> Result<OwnedFd> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare on a thread of our own, which ends here; the fd keeps the
            // namespace alive after it.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(net_error("creating a network namespace".into(), crate::sys::errno()));
                }
                let fd = libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(net_error("opening the new network namespace".into(), crate::sys::errno()));
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut nl = Netlink::new()?;
                nl.set_up(1, None).map_err(|e| net_error("setting lo up".into(), e))?;
                Ok(fd)
            }
        })
        .join()
        .unwrap_or_else(|_| Err(net_error("network thread panicked".into(), 0)))
    })
}

/// Make sure the bridge `name` exists with `cidr` on it and is up. Returns whether it was
/// created now. An existing link of that name that is not a bridge is an error.
pub fn bridge_ensure(name: &str, cidr: Cidr, mtu: Option<u32>) -> Result<bool> {
    let mut nl = Netlink::new()?;
    let mut created = false;
    let mut index = nl.index(name);
    if index == 0 {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            // No STP and no forwarding delay: a port forwards as soon as it is up.
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::StpState(BridgeStpState::Disabled),
                InfoBridge::ForwardDelay(0),
            ])),
        ]));
        match nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => created = true,
            Err(libc::EEXIST) => {}
            Err(e) => return Err(net_error(format!("creating bridge {name}"), e)),
        }
        index = nl.index(name);
        if index == 0 {
            return Err(net_error(format!("bridge {name} vanished"), libc::ENODEV));
        }
    } else if !is_bridge(name) {
        return Err(net_error(format!("{name} exists and is not a bridge"), libc::EEXIST));
    }
    nl.add_address(index, cidr)
        .map_err(|e| net_error(format!("adding {}/{} to {name}", cidr.addr, cidr.prefix), e))?;
    nl.set_up(index, None).map_err(|e| net_error(format!("setting {name} up"), e))?;
    Ok(created)
}

fn is_bridge(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).join("bridge").exists()
}

/// Delete the link `name` in the calling thread's namespace (a veth takes its peer with it).
/// Returns false when there was none.
pub fn link_delete(name: &str) -> Result<bool> {
    let mut nl = Netlink::new()?;
    let index = nl.index(name);
    if index == 0 {
        return Ok(false);
    }
    match nl.delete(index) {
        Ok(()) => Ok(true),
        Err(libc::ENODEV) => Ok(false),
        Err(e) => Err(net_error(format!("deleting link {name}"), e)),
    }
}

/// Delete the link `name` inside the network namespace `netns`.
pub fn link_delete_in(netns: RawFd, name: &str) -> Result<bool> {
    let name = name.to_string();
    in_netns(netns, move || link_delete(&name))
}

/// Connect the namespace `netns` to `bridge`: a veth pair whose host end `host` is a port of
/// the bridge and whose other end is made in `netns` as `ep.name` with `ep`'s address, up, and
/// the default route via `ep.gateway` when given.
pub fn veth_attach(netns: RawFd, host: &str, bridge: &str, ep: &Endpoint) -> Result<()> {
    let mut nl = Netlink::new()?;
    let master = nl.index(bridge);
    if master == 0 {
        return Err(net_error(format!("bridge {bridge} does not exist"), libc::ENODEV));
    }
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(ep.name.clone()));
    peer.attributes.push(LinkAttribute::NetNsFd(netns));
    if let Some(mac) = ep.mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(mtu) = ep.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::IfName(host.to_string()));
    msg.attributes.push(LinkAttribute::Controller(master));
    if let Some(mtu) = ep.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        .map_err(|e| net_error(format!("creating veth {host} for bridge {bridge}"), e))?;
    // Hairpin: a container reaching its own published port through the host comes back out
    // of the port it went in by (with br_netfilter, which Docker loads, its DNAT is bridged).
    let _ = std::fs::write(format!("/sys/class/net/{host}/brport/hairpin_mode"), b"1");
    let inside = ep.clone();
    let configured = in_netns(netns, move || {
        let mut nl = Netlink::new()?;
        let index = nl.index(&inside.name);
        if index == 0 {
            return Err(net_error(format!("{} did not appear in the container", inside.name), libc::ENODEV));
        }
        let cidr = inside.cidr;
        nl.add_address(index, cidr)
            .map_err(|e| net_error(format!("adding {}/{} to {}", cidr.addr, cidr.prefix, inside.name), e))?;
        nl.set_up(index, None).map_err(|e| net_error(format!("setting {} up", inside.name), e))?;
        if let Some(gw) = inside.gateway {
            nl.add_default_route(gw, index)
                .map_err(|e| net_error(format!("adding the default route via {gw}"), e))?;
        }
        Ok(())
    });
    if configured.is_err() {
        let _ = link_delete(host);
    }
    configured
}
