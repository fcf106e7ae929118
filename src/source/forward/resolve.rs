//! Reverse DNS for `source_hostname_key`: once per connection, on a blocking thread.

use std::net::IpAddr;

/// The host name of `ip`, or `None` when the resolver has none.
pub fn reverse(ip: IpAddr) -> Option<String> {
    dns_lookup::lookup_addr(&ip).ok().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_a_name() {
        // /etc/hosts maps 127.0.0.1 on every machine we run on.
        assert!(super::reverse("127.0.0.1".parse().unwrap()).is_some());
    }
}
