// SPDX-License-Identifier: Apache-2.0
//! IPv4 `IP_PKTINFO` for UDP servers bound to a wildcard address: learn each request's
//! destination address and reply from it (see ip(7), "IP_PKTINFO").

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Room for one `in_pktinfo` control message.
const CMSG_SPACE: usize = 64;

/// Asks the kernel to attach `IP_PKTINFO` to received datagrams.
pub(crate) fn enable(u: &UdpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd and a c_int option value of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            u.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram: returns (source, destination address of the packet).
pub(crate) fn recv(u: &UdpSocket, buf: &mut [u8]) -> io::Result<(SocketAddr, Ipv4Addr)> {
    // SAFETY: every pointer handed to recvmsg points into live locals of the right size; the
    // cmsg walk uses the libc macros on the msghdr recvmsg filled in.
    unsafe {
        let mut src: libc::sockaddr_in = zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut ctl = [0u64; CMSG_SPACE / 8];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut src as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = CMSG_SPACE as _;
        if libc::recvmsg(u.as_raw_fd(), &mut msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        let source = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(src.sin_addr.s_addr)),
            u16::from_be(src.sin_port),
        ));
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Ok((source, Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Err(io::Error::other("datagram without IP_PKTINFO"))
    }
}

/// Sends `data` to `to` with source address `from`.
pub(crate) fn send(u: &UdpSocket, data: &[u8], to: SocketAddr, from: Ipv4Addr) -> io::Result<()> {
    let SocketAddr::V4(to) = to else {
        return u.send_to(data, to).map(|_| ());
    };
    // SAFETY: as in `recv`; the control buffer is large and aligned enough for one in_pktinfo.
    unsafe {
        let mut dst: libc::sockaddr_in = zeroed();
        dst.sin_family = libc::AF_INET as libc::sa_family_t;
        dst.sin_port = to.port().to_be();
        dst.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        };
        let mut ctl = [0u64; CMSG_SPACE / 8];
        let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut dst as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
        let mut info: libc::in_pktinfo = zeroed();
        info.ipi_spec_dst.s_addr = u32::from(from).to_be();
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
        if libc::sendmsg(u.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
