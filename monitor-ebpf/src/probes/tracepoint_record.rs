//! Reading tracepoint fields at offsets known only at load time.
//!
//! The verifier refuses context accesses at non-immediate offsets, so each
//! program copies the head of its record to the stack with one
//! `bpf_probe_read_kernel` and reads fields from the copy.
use aya_ebpf::{EbpfContext, helpers::bpf_probe_read_kernel, programs::TracePointContext};
use monitor_common::TRACEPOINT_RECORD_LEN;

#[repr(C, align(8))]
pub struct Record([u8; TRACEPOINT_RECORD_LEN]);

impl Record {
    #[inline(always)]
    pub fn read(ctx: &TracePointContext) -> Option<Record> {
        // SAFETY: the perf trace buffer behind a tracepoint context is far
        // larger than TRACEPOINT_RECORD_LEN; the helper checks the read anyway.
        unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const Record) }.ok()
    }

    #[inline(always)]
    fn get<T: Copy + Default>(&self, offset: usize) -> T {
        if offset + core::mem::size_of::<T>() > TRACEPOINT_RECORD_LEN {
            return T::default();
        }
        // SAFETY: bounds checked above; the record is plain bytes.
        unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(offset) as *const T) }
    }

    #[inline(always)]
    pub fn u32_at(&self, offset: usize) -> u32 {
        self.get::<u32>(offset)
    }

    #[inline(always)]
    pub fn i32_at(&self, offset: usize) -> i32 {
        self.get::<i32>(offset)
    }

    #[inline(always)]
    pub fn u64_at(&self, offset: usize) -> u64 {
        self.get::<u64>(offset)
    }

    #[inline(always)]
    pub fn i64_at(&self, offset: usize) -> i64 {
        self.get::<i64>(offset)
    }

    #[inline(always)]
    pub fn u8_at(&self, offset: usize) -> u8 {
        self.get::<u8>(offset)
    }
}
