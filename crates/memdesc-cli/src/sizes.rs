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
}
