//! Reading several tracepoint fields at load-time offsets with one helper
//! call: the verifier refuses context reads at non-immediate offsets, so the
//! head of the record is copied to the stack and fields read from the copy.
use aya_ebpf::{EbpfContext, helpers::bpf_probe_read_kernel, programs::TracePointContext};
use monitor_common::TRACEPOINT_HEAD_LEN;

#[repr(C, align(8))]
pub struct Head([u8; TRACEPOINT_HEAD_LEN]);

impl Head {
    #[inline(always)]
    pub fn read(ctx: &TracePointContext) -> Option<Head> {
        // SAFETY: the perf buffer behind a tracepoint context is far larger
        // than the head; the helper checks the read anyway.
        unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const Head) }.ok()
    }

    /// The field at `offset` (checked against the head's length; the
    /// daemon checked the offsets against it at load time too).
    #[inline(always)]
    pub fn get<T: Copy + Default>(&self, offset: usize) -> T {
        if offset + core::mem::size_of::<T>() > TRACEPOINT_HEAD_LEN {
            return T::default();
        }
        // SAFETY: bounds checked above; the head is plain bytes.
        unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(offset) as *const T) }
    }
}
