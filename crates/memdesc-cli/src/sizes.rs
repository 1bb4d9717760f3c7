//! Descriptor sizes for the cost model, taken from `size_of` of the core's real types, never
//! typed in.

use memdesc::desc::{Folio, MappableDesc, Netmem, PtDesc, VmallocDesc, Zspage};
use memdesc::slab::Slab;
use memdesc::word::Page;
use memdesc_linux::cost::DescriptorSizes;
use std::mem::size_of;

/// The sizes of this build's descriptors.
pub fn descriptor_sizes() -> DescriptorSizes {
    DescriptorSizes {
        word: size_of::<Page>(),
        folio: size_of::<Folio>(),
        // Large folios use the same descriptor as order-0 ones for now.
        large_folio: size_of::<Folio>(),
        slab: size_of::<Slab>(),
        ptdesc: size_of::<PtDesc>(),
        zspage: size_of::<Zspage>(),
        netmem: size_of::<Netmem>(),
        vmalloc: size_of::<VmallocDesc>(),
        mappable: size_of::<MappableDesc>(),
    }
}

/// The `descriptors` section of `memdesc bench --json`: bytes of each descriptor type.
#[derive(serde::Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The per-page word.
    pub word_bytes: usize,
    /// An order-0 folio's descriptor.
    pub folio_order0_bytes: usize,
    /// What an order-0 folio page costs in all: word plus descriptor (Linux: 64).
    pub folio_order0_plus_word_bytes: usize,
    /// A slab's descriptor.
    pub slab_bytes: usize,
    /// A page-table page's descriptor.
    pub ptdesc_bytes: usize,
    /// A zspage descriptor.
    pub zspage_bytes: usize,
    /// A page_pool page's descriptor.
    pub netmem_bytes: usize,
    /// A vmalloc page's descriptor.
    pub vmalloc_bytes: usize,
    /// Mappable driver memory's descriptor.
    pub mappable_bytes: usize,
}

/// The `descriptors` bench section, from [`descriptor_sizes`].
pub fn descriptors() -> Descriptors {
    let s = descriptor_sizes();
    Descriptors {
        word_bytes: s.word,
        folio_order0_bytes: s.folio,
        folio_order0_plus_word_bytes: s.word + s.folio,
        slab_bytes: s.slab,
        ptdesc_bytes: s.ptdesc,
        zspage_bytes: s.zspage,
        netmem_bytes: s.netmem,
        vmalloc_bytes: s.vmalloc,
        mappable_bytes: s.mappable,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_the_real_types() {
        let s = super::descriptor_sizes();
        assert_eq!(s.word, 8);
        assert_eq!(s.folio, 48, "order-0 folio + word = 56 B, under Linux's 64");
        assert_eq!(s.slab, 48);
        assert!(s.ptdesc.is_multiple_of(16) && s.zspage.is_multiple_of(16) && s.netmem.is_multiple_of(16));
    }

    #[test]
    fn descriptors_section_matches_the_types() {
        let d = super::descriptors();
        assert_eq!(d.netmem_bytes, std::mem::size_of::<memdesc::desc::Netmem>());
        assert_eq!(d.vmalloc_bytes, std::mem::size_of::<memdesc::desc::VmallocDesc>());
        assert_eq!(d.folio_order0_plus_word_bytes, 56);
    }
}
