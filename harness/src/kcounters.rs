//! Rule and policy counters read straight from the kernel, no process: an
//! nf_tables netlink dump (tables, chains, rules with their `counter`
//! expressions) for the nft backend, `IPT_SO_GET_INFO` / `IPT_SO_GET_ENTRIES`
//! (and the IPv6 twins) for legacy, the way `iptables-legacy-save` reads them.
//!
//! The kernel gives numbers by position, not the rule text `*-save` prints, so
//! the text comes from one `*-save -c` (a *template*) and the kernel fills in the
//! numbers: rule N of chain C is the kernel's Nth rule of C. The template is
//! kept per host thread (one network namespace) and backend and family, with the
//! *shape* of the ruleset it was taken from: the tables, chains, policies and the
//! rules' identities (nf_tables rule handles, which a reload always renews; the
//! legacy table blob with its counters zeroed). A read whose shape differs (the
//! rules changed by anyone, not only [`crate::Lab::load`]) takes a new template,
//! so a stale text is never paired with new numbers; a template whose rule
//! counts do not line up with the kernel's is never used.
//!
//! Must run on a lab host's thread: the sockets belong to the namespace of the
//! thread that opens them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::os::fd::AsFd;

use portcullis_netfilter::counters::{Counter, CounterKind, Counters};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::backend::{Backend, Family};
use crate::error::{LabError, Result};

/// One table's counters as the kernel holds them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableCounts {
    pub name: String,
    /// Chains in kernel order.
    pub chains: Vec<ChainCounts>,
}

/// One chain's counters: the policy's (built-in chains) and each rule's, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChainCounts {
    pub name: String,
    pub policy: Option<(u64, u64)>,
    pub rules: Vec<(u64, u64)>,
}

/// A family's tables read from the kernel, with the shape they had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRead {
    pub tables: Vec<TableCounts>,
    pub shape: u64,
}

impl KernelRead {
    fn chain(&self, table: &str, chain: &str) -> Option<&ChainCounts> {
        self.tables
            .iter()
            .find(|t| t.name == table)?
            .chains
            .iter()
            .find(|c| c.name == chain)
    }

    /// `template` (parsed from `*-save -c`) with the kernel's numbers, only
    /// `table` when given (the 1 ms polls read one table: nothing else is
    /// copied), or `None` when the two do not line up: a chain of the template's
    /// tables missing from either side, or a different number of rules in one.
    pub fn fill(&self, template: &Counters, table: Option<&str>) -> Option<Counters> {
        let wanted = |t: &str| table.is_none_or(|w| w == t);
        let mut rules: HashMap<(&str, &str), usize> = HashMap::new();
        let mut out = Counters::default();
        for c in template.entries.iter().filter(|c| wanted(&c.table)) {
            let chain = self.chain(&c.table, &c.chain)?;
            let (packets, bytes) = match &c.kind {
                CounterKind::Policy { .. } => chain.policy?,
                CounterKind::Rule { index, .. } => {
                    *rules.entry((&c.table, &c.chain)).or_default() += 1;
                    *chain.rules.get(index.checked_sub(1)?)?
                }
            };
            out.entries.push(Counter {
                packets,
                bytes,
                ..c.clone()
            });
        }
        // Every chain of the template's tables has as many rules on both sides.
        let tables = template.tables();
        for t in self
            .tables
            .iter()
            .filter(|t| tables.contains(&t.name) && wanted(&t.name))
        {
            for ch in &t.chains {
                let n = rules
                    .get(&(t.name.as_str(), ch.name.as_str()))
                    .copied()
                    .unwrap_or(0);
                if n != ch.rules.len() {
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// Read every table of `family` from the kernel (the calling thread's namespace).
pub fn read(backend: Backend, family: Family) -> io::Result<KernelRead> {
    match backend {
        Backend::Nft => nft::read(family),
        Backend::Legacy => legacy::read(family),
    }
}

/// How many `*-save -c` processes [`counters`] has run on the calling host
/// thread: each is a template taken because none matched the kernel's
/// ruleset. For the trial that proves reads after the first cost no process.
pub fn save_reads() -> usize {
    SAVE_READS.with(std::cell::Cell::get)
}

struct Template {
    shape: u64,
    counters: Counters,
}

thread_local! {
    /// The templates of this host thread's namespace, by backend and family.
    static TEMPLATES: RefCell<HashMap<(Backend, Family), Template>> = RefCell::new(HashMap::new());
    static SAVE_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The counters of `family` (only `table` when given), as `*-save -c [-t
/// TABLE]` would print them, read from the kernel when this thread holds a
/// template of the same shape, else from one `*-save -c` that becomes the
/// template. Runs on a lab host's thread; `host` names it in errors.
pub async fn counters(
    backend: Backend,
    family: Family,
    table: Option<&str>,
    host: &str,
) -> Result<Counters> {
    let before = read(backend, family).ok();
    if let Some(now) = &before {
        let hit = TEMPLATES.with(|t| {
            t.borrow()
                .get(&(backend, family))
                .filter(|t| t.shape == now.shape)
                .and_then(|t| now.fill(&t.counters, table))
        });
        if let Some(c) = hit {
            return Ok(c);
        }
    }
    let bin = backend.save_binary(family);
    let argv = [bin.as_str(), "-c"];
    SAVE_READS.with(|n| n.set(n.get() + 1));
    let text = crate::host::run_command(&argv, None)
        .await
        .map_err(|source| LabError::Backend {
            host: host.to_owned(),
            source,
        })?;
    let parsed = Counters::parse(family, &text).map_err(|e| LabError::Parse {
        host: host.to_owned(),
        command: argv.join(" "),
        line: e.line,
        reason: e.reason,
    })?;
    // Keep it only when nothing changed while `*-save` ran and it lines up.
    let after = read(backend, family).ok();
    let steady = matches!((&before, &after), (Some(b), Some(a)) if b.shape == a.shape);
    if let Some(after) = after.filter(|a| steady && a.fill(&parsed, None).is_some()) {
        TEMPLATES.with(|t| {
            t.borrow_mut().insert(
                (backend, family),
                Template {
                    shape: after.shape,
                    counters: parsed.clone(),
                },
            )
        });
    }
    Ok(match table {
        Some(t) => parsed.table(t),
        None => parsed,
    })
}

fn hash_of(x: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// nf_tables over netlink: three dumps (tables, chains, rules) of one family.
mod nft {
    use super::*;

    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETTABLE: u16 = 1;
    const NFT_MSG_GETCHAIN: u16 = 4;
    const NFT_MSG_GETRULE: u16 = 7;
    const NFT_MSG_GETGEN: u16 = 16;
    const NFTA_GEN_ID: u16 = 1;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLM_F_DUMP_INTR: u16 = 0x10;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;

    const NFTA_TABLE_NAME: u16 = 1;
    const NFTA_CHAIN_TABLE: u16 = 1;
    const NFTA_CHAIN_NAME: u16 = 3;
    const NFTA_CHAIN_HOOK: u16 = 4;
    const NFTA_CHAIN_POLICY: u16 = 5;
    const NFTA_CHAIN_COUNTERS: u16 = 8;
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_CHAIN: u16 = 2;
    const NFTA_RULE_HANDLE: u16 = 3;
    const NFTA_RULE_EXPRESSIONS: u16 = 4;
    const NFTA_LIST_ELEM: u16 = 1;
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
    const NFTA_COUNTER_BYTES: u16 = 1;
    const NFTA_COUNTER_PACKETS: u16 = 2;

    /// How often a dump the kernel marks interrupted (the ruleset changed
    /// mid-dump) is tried again.
    const TRIES: usize = 5;

    pub(super) fn read(family: Family) -> io::Result<KernelRead> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let nfproto = match family {
            Family::V4 => libc::NFPROTO_IPV4,
            Family::V6 => libc::NFPROTO_IPV6,
        } as u8;
        for _ in 0..TRIES {
            let Some(read) = read_once(&socket, nfproto)? else {
                continue;
            };
            return Ok(read);
        }
        Err(io::Error::other(
            "the nf_tables ruleset kept changing during the dump",
        ))
    }

    /// One consistent read, or `None` when a dump was interrupted.
    fn read_once(socket: &Socket, nfproto: u8) -> io::Result<Option<KernelRead>> {
        // The ruleset's generation, bumped by every commit: a reload of the
        // same rules may well reuse the same rule handles.
        let gen_before = generation(socket)?;
        let mut names = Vec::new();
        if !dump(socket, NFT_MSG_GETTABLE, nfproto, |attrs| {
            if let Some(n) = find(attrs, NFTA_TABLE_NAME) {
                names.push(string(n));
            }
        })? {
            return Ok(None);
        }
        names.sort();
        let mut tables: Vec<TableCounts> = names
            .iter()
            .map(|n| TableCounts {
                name: n.clone(),
                chains: Vec::new(),
            })
            .collect();
        let mut shape = Vec::<(String, String, u64)>::new();
        let mut bad = None;
        if !dump(socket, NFT_MSG_GETCHAIN, nfproto, |attrs| {
            let (Some(t), Some(c)) = (find(attrs, NFTA_CHAIN_TABLE), find(attrs, NFTA_CHAIN_NAME))
            else {
                return;
            };
            let (t, c) = (string(t), string(c));
            let base = find(attrs, NFTA_CHAIN_HOOK).is_some();
            let verdict = find(attrs, NFTA_CHAIN_POLICY).map(be_u32);
            let policy = base.then(|| {
                find(attrs, NFTA_CHAIN_COUNTERS)
                    .map(counter)
                    .unwrap_or((0, 0))
            });
            shape.push((t.clone(), c.clone(), u64::from(verdict.unwrap_or(u32::MAX))));
            match tables.iter_mut().find(|x| x.name == t) {
                Some(table) => table.chains.push(ChainCounts {
                    name: c,
                    policy,
                    rules: Vec::new(),
                }),
                None => bad = Some(format!("chain {c} of unknown table {t}")),
            }
        })? {
            return Ok(None);
        }
        if !dump(socket, NFT_MSG_GETRULE, nfproto, |attrs| {
            let (Some(t), Some(c)) = (find(attrs, NFTA_RULE_TABLE), find(attrs, NFTA_RULE_CHAIN))
            else {
                return;
            };
            let (t, c) = (string(t), string(c));
            let handle = find(attrs, NFTA_RULE_HANDLE).map(be_u64).unwrap_or(0);
            let counts = find(attrs, NFTA_RULE_EXPRESSIONS).and_then(rule_counter);
            shape.push((t.clone(), c.clone(), handle));
            let chain = tables
                .iter_mut()
                .find(|x| x.name == t)
                .and_then(|x| x.chains.iter_mut().find(|x| x.name == c));
            match (chain, counts) {
                (Some(chain), Some(counts)) => chain.rules.push(counts),
                // A rule without a counter cannot be paired with a `*-save`
                // line's numbers: no template will line up.
                (Some(_), None) => bad = Some(format!("rule {handle} of {t}/{c} has no counter")),
                (None, _) => bad = Some(format!("rule of unknown chain {t}/{c}")),
            }
        })? {
            return Ok(None);
        }
        if generation(socket)? != gen_before {
            // A commit between the dumps: they may not agree with each other.
            return Ok(None);
        }
        if let Some(why) = bad {
            return Err(io::Error::other(why));
        }
        Ok(Some(KernelRead {
            tables,
            shape: hash_of((gen_before, &names, &shape)),
        }))
    }

    /// `NFT_MSG_GETGEN`: the ruleset generation of the namespace.
    fn generation(socket: &Socket) -> io::Result<u32> {
        let mut id = None;
        let intact = request(
            socket,
            NFT_MSG_GETGEN,
            libc::NFPROTO_UNSPEC as u8,
            false,
            |attrs| {
                id = find(attrs, NFTA_GEN_ID).map(be_u32);
            },
        )?;
        match id {
            Some(id) if intact => Ok(id),
            _ => Err(io::Error::other("no generation in the nf_tables reply")),
        }
    }

    fn dump(socket: &Socket, msg: u16, nfproto: u8, each: impl FnMut(&[u8])) -> io::Result<bool> {
        request(socket, msg, nfproto, true, each)
    }

    /// Send one request (a dump, or a get answered by one message) and call
    /// `each` with every reply's attributes; `false` when the kernel marked the
    /// dump interrupted.
    fn request(
        socket: &Socket,
        msg: u16,
        nfproto: u8,
        is_dump: bool,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        let flags = if is_dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST
        };
        let seq = 1u32;
        let mut req = Vec::with_capacity(20);
        req.extend_from_slice(&20u32.to_ne_bytes());
        req.extend_from_slice(&kind.to_ne_bytes());
        req.extend_from_slice(&flags.to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[nfproto, 0, 0, 0]);
        socket.send(&req, 0)?;
        let mut intact = true;
        loop {
            let (buf, _) = socket.recv_from_full()?;
            if buf.is_empty() {
                return Err(io::Error::other("empty nf_tables dump reply"));
            }
            let mut rest = &buf[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                if len < 16 || len > rest.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let body = &rest[16..len];
                match ty {
                    NLMSG_DONE => return Ok(intact),
                    NLMSG_ERROR => {
                        let code = body
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .unwrap_or(-libc::EIO);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    // Dumps answer with the NEW message of what was asked
                    // (NEWTABLE for GETTABLE, ...).
                    t if t == kind - 1 => {
                        if flags & NLM_F_DUMP_INTR != 0 {
                            intact = false;
                        }
                        // nfgenmsg (4 bytes), then attributes.
                        if let Some(attrs) = body.get(4..) {
                            each(attrs);
                        }
                        if !is_dump {
                            return Ok(intact);
                        }
                    }
                    _ => {}
                }
                rest = &rest[align(len).min(rest.len())..];
            }
        }
    }

    /// The packets and bytes of a rule's first `counter` expression.
    fn rule_counter(exprs: &[u8]) -> Option<(u64, u64)> {
        attrs(exprs)
            .filter(|(ty, _)| *ty == NFTA_LIST_ELEM)
            .find_map(|(_, elem)| {
                let name = find(elem, NFTA_EXPR_NAME)?;
                (string(name) == "counter").then(|| find(elem, NFTA_EXPR_DATA).map(counter))?
            })
    }

    /// `NFTA_COUNTER_PACKETS` and `_BYTES` of a nested counter attribute.
    fn counter(nest: &[u8]) -> (u64, u64) {
        let get = |ty| find(nest, ty).map(be_u64).unwrap_or(0);
        (get(NFTA_COUNTER_PACKETS), get(NFTA_COUNTER_BYTES))
    }

    fn align(n: usize) -> usize {
        (n + 3) & !3
    }

    /// The attributes in `buf`: (type without the nested/byte-order flags, payload).
    fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
        let mut rest = buf;
        std::iter::from_fn(move || {
            if rest.len() < 4 {
                return None;
            }
            let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
            let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
            if len < 4 || len > rest.len() {
                return None;
            }
            let payload = &rest[4..len];
            rest = &rest[align(len).min(rest.len())..];
            Some((ty, payload))
        })
    }

    fn find(buf: &[u8], ty: u16) -> Option<&[u8]> {
        attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
    }

    fn string(b: &[u8]) -> String {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    fn be_u32(b: &[u8]) -> u32 {
        b.get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .unwrap_or(0)
    }

    fn be_u64(b: &[u8]) -> u64 {
        b.get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&ty.to_ne_bytes());
            v.extend_from_slice(payload);
            while v.len() % 4 != 0 {
                v.push(0);
            }
            v
        }

        #[test]
        fn a_rules_counter_expression_is_found_among_others() {
            let mut counter = attr(NFTA_COUNTER_BYTES, &120u64.to_be_bytes());
            counter.extend(attr(NFTA_COUNTER_PACKETS, &2u64.to_be_bytes()));
            let mut match_elem = attr(NFTA_EXPR_NAME, b"match\0");
            match_elem.extend(attr(NFTA_EXPR_DATA | 0x8000, &attr(1, b"comment\0")));
            let mut counter_elem = attr(NFTA_EXPR_NAME, b"counter\0");
            counter_elem.extend(attr(NFTA_EXPR_DATA | 0x8000, &counter));
            let mut list = attr(NFTA_LIST_ELEM | 0x8000, &match_elem);
            list.extend(attr(NFTA_LIST_ELEM | 0x8000, &counter_elem));
            assert_eq!(rule_counter(&list), Some((2, 120)));
            assert_eq!(rule_counter(&attr(NFTA_LIST_ELEM, &match_elem)), None);
        }
    }
}

/// The legacy x_tables: `*T_SO_GET_INFO` then `*T_SO_GET_ENTRIES` per table on a
/// raw socket, the blob walked the way libiptc walks it.
mod legacy {
    use super::*;

    /// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` (`IPT_BASE_CTL`), then `_ENTRIES`.
    const SO_GET_INFO: libc::c_int = 64;
    const SO_GET_ENTRIES: libc::c_int = 65;
    /// `struct ipt_getinfo`: name[32], valid_hooks, hook_entry[5], underflow[5],
    /// num_entries, size.
    const GETINFO_LEN: usize = 84;
    /// `struct ipt_get_entries`: name[32], size, then the entries at 8-byte alignment.
    const GET_ENTRIES_HEAD: usize = 40;
    const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    const TRIES: usize = 5;

    /// Where the fields of `struct ipt_entry` / `ip6t_entry` are.
    struct Layout {
        target_offset: usize,
        next_offset: usize,
        counters: usize,
    }

    const V4: Layout = Layout {
        target_offset: 88,
        next_offset: 90,
        counters: 96,
    };
    const V6: Layout = Layout {
        target_offset: 140,
        next_offset: 142,
        counters: 152,
    };

    pub(super) fn read(family: Family) -> io::Result<KernelRead> {
        let names_file = match family {
            Family::V4 => "/proc/thread-self/net/ip_tables_names",
            Family::V6 => "/proc/thread-self/net/ip6_tables_names",
        };
        let mut names: Vec<String> = match std::fs::read_to_string(names_file) {
            Ok(s) => s.lines().map(str::to_owned).collect(),
            // The module is not loaded: no legacy table anywhere.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        names.sort();
        let (domain, level, layout) = match family {
            Family::V4 => (socket2::Domain::IPV4, libc::IPPROTO_IP, &V4),
            Family::V6 => (socket2::Domain::IPV6, libc::IPPROTO_IPV6, &V6),
        };
        let socket = socket2::Socket::new(
            domain,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
        )?;
        let mut tables = Vec::new();
        let mut shape = Vec::new();
        for name in &names {
            let (table, blob) = read_table(&socket, level, layout, name)?;
            tables.push(table);
            shape.push(blob);
        }
        Ok(KernelRead {
            tables,
            shape: hash_of((&names, &shape)),
        })
    }

    /// One table's chains, and its blob (head and entries) with the counters
    /// zeroed: its shape.
    fn read_table(
        socket: &socket2::Socket,
        level: libc::c_int,
        layout: &Layout,
        name: &str,
    ) -> io::Result<(TableCounts, Vec<u8>)> {
        if name.len() >= 32 {
            return Err(io::Error::other(format!("table name too long: {name}")));
        }
        for _ in 0..TRIES {
            let mut info = [0u8; GETINFO_LEN];
            info[..name.len()].copy_from_slice(name.as_bytes());
            crate::sys::getsockopt_bytes(socket.as_fd(), level, SO_GET_INFO, &mut info)?;
            let u32_at = |b: &[u8], at: usize| {
                u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
            };
            let valid = u32_at(&info, 32);
            let hook_entry: Vec<usize> = (0..5).map(|h| u32_at(&info, 36 + 4 * h)).collect();
            let underflow: Vec<usize> = (0..5).map(|h| u32_at(&info, 56 + 4 * h)).collect();
            let size = u32_at(&info, 80);

            let mut buf = vec![0u8; GET_ENTRIES_HEAD + size];
            buf[..name.len()].copy_from_slice(name.as_bytes());
            buf[32..36].copy_from_slice(&(size as u32).to_ne_bytes());
            match crate::sys::getsockopt_bytes(socket.as_fd(), level, SO_GET_ENTRIES, &mut buf) {
                // The table changed size between the two calls.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            let mut blob = buf.split_off(GET_ENTRIES_HEAD);
            let hooks: Vec<(usize, usize, &str)> = (0..5)
                .filter(|h| valid & (1 << h) != 0)
                .map(|h| (hook_entry[h], underflow[h], HOOKS[h]))
                .collect();
            let table = walk(name, &blob, layout, &hooks)?;
            // The shape: the head and the entries without their counters.
            let mut at = 0;
            while at + layout.next_offset + 2 <= blob.len() {
                let next = u16_at(&blob, at + layout.next_offset);
                blob[at + layout.counters..at + layout.counters + 16].fill(0);
                if next == 0 {
                    break;
                }
                at += next;
            }
            blob.extend_from_slice(&info[32..]);
            return Ok((table, blob));
        }
        Err(io::Error::other(format!(
            "the legacy {name} table kept changing while it was read"
        )))
    }

    fn u16_at(b: &[u8], at: usize) -> usize {
        u16::from_ne_bytes([b[at], b[at + 1]]) as usize
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Chains and counters of one table's entries: a built-in chain runs from
    /// its hook's entry to its underflow (the policy); a user chain from its
    /// `ERROR` head (which carries its name) to the `RETURN` before the next
    /// head; the table ends with an `ERROR` entry named `ERROR`.
    fn walk(
        name: &str,
        blob: &[u8],
        layout: &Layout,
        hooks: &[(usize, usize, &str)],
    ) -> io::Result<TableCounts> {
        let bad = |why: &str| io::Error::other(format!("legacy {name} table: {why}"));
        let mut table = TableCounts {
            name: name.to_owned(),
            chains: Vec::new(),
        };
        // Whether the current chain is a user chain (its last entry is the
        // implicit RETURN, not a rule).
        let mut user = false;
        let mut at = 0;
        while at < blob.len() {
            if at + layout.counters + 16 > blob.len() {
                return Err(bad("truncated entry"));
            }
            let target = at + u16_at(blob, at + layout.target_offset);
            let next = u16_at(blob, at + layout.next_offset);
            if next == 0 || target + 32 > blob.len() {
                return Err(bad("malformed entry"));
            }
            let counts = (
                u64_at(blob, at + layout.counters),
                u64_at(blob, at + layout.counters + 8),
            );
            let tname = nul_str(&blob[target + 2..target + 31]);
            if let Some(&(_, _, hook)) = hooks.iter().find(|(entry, _, _)| *entry == at) {
                if user {
                    drop_return(&mut table);
                }
                user = false;
                table.chains.push(ChainCounts {
                    name: hook.to_owned(),
                    ..Default::default()
                });
            }
            if tname == "ERROR" {
                if user {
                    drop_return(&mut table);
                }
                let chain = nul_str(blob.get(target + 32..target + 64).unwrap_or(&[]));
                if chain == "ERROR" {
                    return Ok(table);
                }
                user = true;
                table.chains.push(ChainCounts {
                    name: chain,
                    ..Default::default()
                });
            } else if let Some(chain) = table.chains.last_mut() {
                if hooks.iter().any(|(_, under, _)| *under == at) {
                    chain.policy = Some(counts);
                } else {
                    chain.rules.push(counts);
                }
            } else {
                return Err(bad("an entry before any chain"));
            }
            at += next;
        }
        Err(bad("no closing ERROR entry"))
    }

    /// A user chain's last entry is its implicit `RETURN`, not a rule.
    fn drop_return(table: &mut TableCounts) {
        if let Some(last) = table.chains.last_mut() {
            last.rules.pop();
        }
    }

    fn nul_str(b: &[u8]) -> String {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_filled_by_position_and_refused_when_counts_differ() {
        let text = "*filter\n:INPUT DROP [9:9]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                    [1:1] -A INPUT -i lo -j ACCEPT\n[2:2] -A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        let template = Counters::parse(Family::V4, text).unwrap();
        let chain = |name: &str, policy, rules: Vec<(u64, u64)>| ChainCounts {
            name: name.into(),
            policy,
            rules,
        };
        let mut read = KernelRead {
            tables: vec![TableCounts {
                name: "filter".into(),
                chains: vec![
                    chain("INPUT", Some((5, 500)), vec![(3, 30), (4, 40)]),
                    chain("FORWARD", Some((0, 0)), vec![]),
                    chain("OUTPUT", Some((7, 70)), vec![]),
                ],
            }],
            shape: 0,
        };
        let filled = read.fill(&template, None).unwrap();
        let input = read.fill(&template, Some("filter")).unwrap();
        assert_eq!(input, filled, "one table: the same counters");
        assert!(
            read.fill(&template, Some("nat"))
                .unwrap()
                .entries
                .is_empty()
        );
        let got: Vec<(u64, u64)> = filled
            .entries
            .iter()
            .map(|c| (c.packets, c.bytes))
            .collect();
        assert_eq!(got, vec![(5, 500), (0, 0), (7, 70), (3, 30), (4, 40)]);
        assert_eq!(filled.entries[3].label(), template.entries[3].label());

        read.tables[0].chains[0].rules.push((1, 1));
        assert_eq!(
            read.fill(&template, None),
            None,
            "a rule more in the kernel"
        );
        read.tables[0].chains[0].rules.truncate(1);
        assert_eq!(
            read.fill(&template, None),
            None,
            "a rule fewer in the kernel"
        );
    }
}
