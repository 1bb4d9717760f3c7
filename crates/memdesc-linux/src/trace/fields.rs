//! The fields of each known event: positional `key=value` parsing with a fallback (a key not
//! where the kernel usually prints it is searched for later in the line), so that the
//! formats of older and newer kernels are read as long as the fields this crate needs exist.

use super::cursor::Cur;
use super::event::{Event, Gfp, LruFlags, PageCacheEvent};
use super::kind::EventKind;
use crate::error::FieldError;

fn is_null_ptr(w: &[u8]) -> bool {
    w == b"(null)" || (!w.is_empty() && w.iter().all(|&b| b == b'0'))
}

fn page_cache(c: &mut Cur<'_>) -> Result<PageCacheEvent, FieldError> {
    c.key(b"dev ", "dev")?;
    let major = c.s[c.p..].iter().position(|&b| b == b':').ok_or(FieldError::new("dev", "expected `MAJOR:MINOR`"))?;
    let mut mc = Cur::new(&c.s[c.p..c.p + major]);
    let dev_major = mc.dec32("dev")?;
    c.p += major + 1;
    let dev_minor = c.dec32("dev")?;
    c.key(b"ino ", "ino")?;
    let ino = c.hex("ino")?;
    c.key(b"pfn=", "pfn")?;
    let pfn = c.hex("pfn")?;
    c.key(b"ofs=", "ofs")?;
    let offset = c.dec("ofs")?;
    let order = if c.opt_key(b"order=") { c.dec32("order")? } else { 0 };
    Ok(PageCacheEvent { dev_major, dev_minor, ino, pfn, offset, order })
}

/// Parses the fields of an event of `kind` (the text after `EVENT: `).
pub(super) fn parse_fields(kind: EventKind, fields: &[u8]) -> Result<Event<'_>, FieldError> {
    let mut c = Cur::new(fields);
    Ok(match kind {
        EventKind::PageAlloc => {
            c.key(b"page=", "page")?;
            let page = c.word();
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            c.key(b"order=", "order")?;
            let order = c.dec32("order")?;
            c.key(b"migratetype=", "migratetype")?;
            let migratetype = c.signed("migratetype")?;
            c.key(b"gfp_flags=", "gfp_flags")?;
            let gfp = Gfp(c.str_word("gfp_flags")?);
            let pfn = if pfn == 0 && is_null_ptr(page) { None } else { Some(pfn) };
            Event::PageAlloc { pfn, order, migratetype, gfp }
        }
        EventKind::PageFree => {
            if c.opt_key(b"page=") {
                c.word();
            }
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            c.key(b"order=", "order")?;
            let order = c.dec32("order")?;
            Event::PageFree { pfn, order }
        }
        EventKind::PageFreeBatched => {
            if c.opt_key(b"page=") {
                c.word();
            }
            c.key(b"pfn=", "pfn")?;
            Event::PageFreeBatched { pfn: c.hex("pfn")? }
        }
        EventKind::Kmalloc | EventKind::KmemCacheAlloc => {
            c.key(b"call_site=", "call_site")?;
            let call_site = c.str_word("call_site")?;
            c.key(b"ptr=", "ptr")?;
            let ptr = c.hex("ptr")?;
            let name =
                if kind == EventKind::KmemCacheAlloc && c.opt_key(b"name=") { Some(c.str_word("name")?) } else { None };
            c.key(b"bytes_req=", "bytes_req")?;
            let bytes_req = c.dec("bytes_req")?;
            c.key(b"bytes_alloc=", "bytes_alloc")?;
            let bytes_alloc = c.dec("bytes_alloc")?;
            c.key(b"gfp_flags=", "gfp_flags")?;
            let gfp = Gfp(c.str_word("gfp_flags")?);
            let node = if c.opt_key(b"node=") { c.signed("node")? } else { -1 };
            if kind == EventKind::Kmalloc {
                Event::Kmalloc { call_site, ptr, bytes_req, bytes_alloc, gfp, node }
            } else {
                Event::KmemCacheAlloc { call_site, ptr, name, bytes_req, bytes_alloc, gfp, node }
            }
        }
        EventKind::Kfree | EventKind::KmemCacheFree => {
            c.key(b"call_site=", "call_site")?;
            let call_site = c.str_word("call_site")?;
            c.key(b"ptr=", "ptr")?;
            let ptr = c.hex("ptr")?;
            if kind == EventKind::Kfree {
                Event::Kfree { call_site, ptr }
            } else {
                let name = if c.opt_key(b"name=") { Some(c.str_word("name")?) } else { None };
                Event::KmemCacheFree { call_site, ptr, name }
            }
        }
        EventKind::FilemapAdd => Event::FilemapAdd(page_cache(&mut c)?),
        EventKind::FilemapDelete => Event::FilemapDelete(page_cache(&mut c)?),
        EventKind::LruInsertion => {
            if c.opt_key(b"folio=") || c.opt_key(b"page=") {
                c.word();
            }
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            c.key(b"lru=", "lru")?;
            let lru = c.dec32("lru")?;
            c.key(b"flags=", "flags")?;
            let f = &c.s[c.p..];
            if f.len() < 6 {
                return Err(FieldError::new("flags", "expected 6 flag columns"));
            }
            let ok = matches!(f[0], b'M' | b' ')
                && matches!(f[1], b'a' | b'f')
                && matches!(f[2], b's' | b' ')
                && matches!(f[3], b'b' | b' ')
                && matches!(f[4], b'd' | b' ')
                && matches!(f[5], b'B' | b' ');
            if !ok {
                return Err(FieldError::new("flags", "unknown flag letter"));
            }
            Event::LruInsertion {
                pfn,
                lru,
                flags: LruFlags {
                    mapped: f[0] == b'M',
                    anon: f[1] == b'a',
                    swapcache: f[2] == b's',
                    swapbacked: f[3] == b'b',
                    mappedtodisk: f[4] == b'd',
                    buffers: f[5] == b'B',
                },
            }
        }
        EventKind::AllocVmapArea => {
            c.key(b"va_start:", "va_start")?;
            c.skip_spaces();
            let addr = c.dec("va_start")?;
            c.key(b"size=", "size")?;
            let size = c.dec("size")?;
            c.key(b"align=", "align")?;
            let align = c.dec("align")?;
            c.key(b"vstart=", "vstart")?;
            let vstart = c.hex("vstart")?;
            c.key(b"vend=", "vend")?;
            let vend = c.hex("vend")?;
            c.key(b"failed=", "failed")?;
            let failed = c.signed("failed")? != 0;
            Event::AllocVmapArea { addr, size, align, vstart, vend, failed }
        }
        EventKind::FreeVmapArea => {
            c.key(b"va_start=", "va_start")?;
            let va_start = c.hex("va_start")?;
            c.key(b"nr_lazy=", "nr_lazy")?;
            let nr_lazy = c.dec("nr_lazy")?;
            c.key(b"nr_lazy_max=", "nr_lazy_max")?;
            let nr_lazy_max = c.dec("nr_lazy_max")?;
            Event::FreeVmapArea { va_start, nr_lazy, nr_lazy_max }
        }
        EventKind::PagePoolHold | EventKind::PagePoolRelease => {
            c.key(b"page_pool=", "page_pool")?;
            let pool = c.hex("page_pool")?;
            let netmem = if c.opt_key(b"netmem=") || c.opt_key(b"page=") {
                c.hex("netmem")?
            } else {
                return Err(FieldError::new("netmem", "missing"));
            };
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            if kind == EventKind::PagePoolHold {
                c.key(b"hold=", "hold")?;
                Event::PagePoolHold { pool, netmem, pfn, hold: c.dec32("hold")? }
            } else {
                c.key(b"release=", "release")?;
                Event::PagePoolRelease { pool, netmem, pfn, release: c.dec32("release")? }
            }
        }
        EventKind::MigratePages => {
            c.key(b"nr_succeeded=", "nr_succeeded")?;
            let succeeded = c.dec("nr_succeeded")?;
            c.key(b"nr_failed=", "nr_failed")?;
            let failed = c.dec("nr_failed")?;
            let opt = |c: &mut Cur<'_>, key: &[u8], f: &'static str| {
                if c.opt_key(key) {
                    c.dec(f)
                } else {
                    Ok(0)
                }
            };
            let thp_succeeded = opt(&mut c, b"nr_thp_succeeded=", "nr_thp_succeeded")?;
            let thp_failed = opt(&mut c, b"nr_thp_failed=", "nr_thp_failed")?;
            let thp_split = opt(&mut c, b"nr_thp_split=", "nr_thp_split")?;
            let split = opt(&mut c, b"nr_split=", "nr_split")?;
            c.key(b"mode=", "mode")?;
            let mode = c.str_word("mode")?;
            c.key(b"reason=", "reason")?;
            let reason = c.str_word("reason")?;
            Event::MigratePages { succeeded, failed, thp_succeeded, thp_failed, thp_split, split, mode, reason }
        }
    })
}
