//! Separate hosts on one machine: the coordinator and each hospital in a Linux network namespace
//! of its own, each with one address on a bridge that lives in a namespace of its own too, so
//! the tests touch nothing of the machine's network. A link set down on the bridge's side is a
//! partition (the host sees its carrier lost, as a pulled cable). Every namespace is removed
//! when the `Hosts` is dropped, however the test ends; names carry the test process's id so
//! that tests running at once never meet. Needs root (`ip netns`), as CI has.

use std::path::Path;
use std::process::Command;

/// The hosts of one test and the bridge between them.
pub struct Hosts {
    prefix: String,
    names: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    super::tool("ip", args)
}

impl Hosts {
    /// `hosts` namespaces on 10.213.0.1, .2, … (host 0 first), joined by one bridge.
    pub fn new(tag: &str, hosts: usize) -> Result<Self, String> {
        let prefix = format!("heal{}{tag}", std::process::id());
        let mut me = Self {
            prefix: prefix.clone(),
            names: Vec::new(),
        };
        let bridge = format!("{prefix}-br");
        ip(&["netns", "add", &bridge])?;
        me.names.push(bridge.clone());
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        for h in 0..hosts {
            let ns = me.namespace(h);
            ip(&["netns", "add", &ns])?;
            me.names.push(ns.clone());
            let port = format!("p{h}");
            ip(&[
                "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Self::address(h)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(me)
    }

    /// [`Hosts::new`], or None with a note where namespaces cannot be made (not root) and
    /// `HEAL_REQUIRE_NETNS` is unset; CI sets it, so there the test fails instead.
    pub fn or_skip(tag: &str, hosts: usize) -> Option<Self> {
        match Self::new(tag, hosts) {
            Ok(h) => Some(h),
            Err(e) if std::env::var_os("HEAL_REQUIRE_NETNS").is_none() => {
                eprintln!("skipped: cannot make network namespaces ({e}); run as root");
                None
            }
            Err(e) => panic!("network namespaces: {e}"),
        }
    }

    /// Host `h`'s address.
    pub fn address(h: usize) -> String {
        format!("10.213.0.{}", h + 1)
    }

    pub fn namespace(&self, h: usize) -> String {
        format!("{}-h{h}", self.prefix)
    }

    /// `program` run inside host `h`'s namespace (`ip netns exec` replaces itself with it, so
    /// the child's pid is the program's).
    pub fn command(&self, h: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.namespace(h)]).arg(program);
        c
    }

    /// Cuts host `h` off the bridge (`up = false`) or joins it again.
    pub fn link(&self, h: usize, up: bool) -> Result<(), String> {
        let bridge = format!("{}-br", self.prefix);
        ip(&[
            "-n",
            &bridge,
            "link",
            "set",
            &format!("p{h}"),
            if up { "up" } else { "down" },
        ])
    }

    /// Namespaces of this process's tests still present (none once every `Hosts` is dropped).
    pub fn left_behind(tag: &str) -> Vec<String> {
        let prefix = format!("heal{}{tag}", std::process::id());
        let out = Command::new("ip").args(["netns", "list"]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        text.unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // the hosts' ends go with their namespaces, the bridge's with the bridge's
        for ns in self.names.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
