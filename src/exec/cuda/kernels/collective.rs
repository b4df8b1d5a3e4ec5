//! Collectives of a sharded plan (`Op::Collective`). With NCCL communicators they are
//! NCCL calls on the engine's stream, so a decode graph captures them like any kernel.
//! For a projection (one rank of a deployment wider than the machine) they are local
//! stand-ins that keep every buffer's shape and values plausible (an all-gather repeats
//! this rank's block in every slot, so the MoE after a DP gather routes realistic rows
//! instead of zeros) while the real collective's time is modelled by `dist::comm_model`.
//!
//! No .cu: NCCL and the copy engine do the work. NCCL gathers rank blocks one after the
//! other, so a column gather (the vocab-parallel logits) lands in the scratch region and is
//! interleaved into the output by one 2-D copy per rank.

use std::rc::Rc;

use anyhow::{bail, Context};
use cudarc::driver::sys;

use super::prepare::{Call, Prep};
use crate::dist::nccl::{CommGroup, Communicators};
use crate::plan::memory::Target;
use crate::plan::{Collective, CollectiveDim, Op, Plan, View};

/// How a bound plan's collectives run.
pub enum CollectiveBackend {
    /// Real collectives over this rank's NCCL communicators.
    Nccl(Communicators),
    /// Local stand-ins; the caller models the time (projection).
    Modelled,
}

/// Scratch a collective needs: a column gather's contiguous NCCL receive buffer.
pub fn scratch_bytes(plan: &Plan, op: &Op, _target: Target) -> usize {
    match op {
        Op::Collective { kind: Collective::AllGather(CollectiveDim::Cols), out, .. } => plan.tensor(out.id).bytes(),
        _ => 0,
    }
}

/// The whole tensor behind `v`, which NCCL needs contiguous.
fn whole(plan: &Plan, v: View, what: &str) -> anyhow::Result<()> {
    let t = plan.tensor(v.id);
    if v.col != 0 || v.cols != t.cols {
        bail!("the {what} of a collective must be a whole tensor, but `{}` is a column window", t.name);
    }
    Ok(())
}

/// A device-to-device 2-D copy of `height` rows of `width` bytes.
#[derive(Debug, Clone, Copy)]
struct Copy2d {
    src: u64,
    src_pitch: usize,
    dst: u64,
    dst_pitch: usize,
    width: usize,
    height: usize,
}

impl Copy2d {
    fn enqueue(&self, stream: sys::CUstream) -> anyhow::Result<()> {
        if self.width == 0 || self.height == 0 {
            return Ok(());
        }
        let p = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: self.src,
            srcArray: std::ptr::null_mut(),
            srcPitch: self.src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: self.dst,
            dstArray: std::ptr::null_mut(),
            dstPitch: self.dst_pitch,
            WidthInBytes: self.width,
            Height: self.height,
        };
        // SAFETY: both regions lie inside the bound plan's arena or scratch (sized by the plan).
        unsafe { sys::cuMemcpy2DAsync_v2(&p, stream) }.result().context("device copy of a collective")?;
        Ok(())
    }
}

/// What one `Op::Collective` does, in addresses: resolved once at bind time.
struct Resolved {
    kind: Collective,
    group: CommGroup,
    dtype: crate::plan::DType,
    /// Send buffer, receive buffer, elements this rank contributes.
    send: u64,
    recv: u64,
    count: usize,
    /// Group size and this rank's index in it.
    ranks: usize,
    index: usize,
    /// Column gather: rows, bytes of one rank's row block, NCCL receive buffer.
    rows: usize,
    row_bytes: usize,
    staging: u64,
}

impl Resolved {
    fn new(cx: &Prep, op: &Op) -> anyhow::Result<Self> {
        let Op::Collective { kind, group, x, out } = op else { unreachable!("collective::prepare got {op:?}") };
        let plan = cx.plan;
        whole(plan, *x, "input")?;
        whole(plan, *out, "output")?;
        let members = plan.layout.group_ranks(*group);
        let index = members.iter().position(|&r| r == plan.layout.rank).expect("a rank is in its own groups");
        let t = plan.tensor(x.id);
        Ok(Resolved {
            kind: *kind,
            group: CommGroup::from(*group),
            dtype: t.dtype,
            send: cx.ptr(*x),
            recv: cx.ptr(*out),
            count: t.rows * t.cols,
            ranks: members.len(),
            index,
            rows: t.rows,
            row_bytes: t.cols * t.dtype.bytes(),
            staging: cx.scratch,
        })
    }

    /// Block `r` of a column gather: rows of `row_bytes` into columns `r * row_bytes ..`.
    fn interleave(&self, src: u64, slot: usize) -> Copy2d {
        Copy2d {
            src,
            src_pitch: self.row_bytes,
            dst: self.recv + (slot * self.row_bytes) as u64,
            dst_pitch: self.row_bytes * self.ranks,
            width: self.row_bytes,
            height: self.rows,
        }
    }

    fn nccl(&self, comms: &Communicators, stream: sys::CUstream) -> anyhow::Result<()> {
        let comm = comms.get(self.group);
        match self.kind {
            Collective::AllReduce => comm.all_reduce_in_place(self.send, self.count, self.dtype)?,
            Collective::AllGather(CollectiveDim::Rows) => {
                comm.all_gather(self.send, self.recv, self.count, self.dtype)?
            }
            Collective::AllGather(CollectiveDim::Cols) => {
                comm.all_gather(self.send, self.staging, self.count, self.dtype)?;
                let block = (self.count * self.dtype.bytes()) as u64;
                for r in 0..self.ranks {
                    self.interleave(self.staging + r as u64 * block, r).enqueue(stream)?;
                }
            }
            Collective::ReduceScatterRows => {
                comm.reduce_scatter(self.send, self.recv, self.count / self.ranks, self.dtype)?
            }
        }
        Ok(())
    }

    /// The projection's stand-in: the data movement a rank would see, without peers.
    fn local(&self, stream: sys::CUstream) -> anyhow::Result<()> {
        let bytes = self.count * self.dtype.bytes();
        match self.kind {
            // Peers' partial sums are not available; this rank's own stays in place.
            Collective::AllReduce => {}
            Collective::AllGather(CollectiveDim::Rows) => {
                for r in 0..self.ranks {
                    let dst = self.recv + (r * bytes) as u64;
                    Copy2d { src: self.send, src_pitch: bytes, dst, dst_pitch: bytes, width: bytes, height: 1 }
                        .enqueue(stream)?;
                }
            }
            Collective::AllGather(CollectiveDim::Cols) => {
                for r in 0..self.ranks {
                    self.interleave(self.send, r).enqueue(stream)?;
                }
            }
            Collective::ReduceScatterRows => {
                let mine = bytes / self.ranks;
                let src = self.send + (self.index * mine) as u64;
                Copy2d { src, src_pitch: mine, dst: self.recv, dst_pitch: mine, width: mine, height: 1 }
                    .enqueue(stream)?;
            }
        }
        Ok(())
    }
}

/// `Op::Collective` on the GPU's collective backend (see [`CollectiveBackend`]).
pub fn prepare(cx: &mut Prep, op: &Op) -> anyhow::Result<Vec<Call>> {
    let Some(backend) = cx.gpu.collectives() else {
        bail!(
            "the plan spans {} ranks but this process has no communicators: run the deployment through `fwdbench run` (one worker per GPU) or project it with --project",
            cx.plan.layout.world
        );
    };
    let resolved = Resolved::new(cx, op)?;
    let backend: Rc<CollectiveBackend> = backend;
    Ok(vec![Call::Custom(Box::new(move |gpu| {
        let stream = gpu.stream.cu_stream();
        match &*backend {
            CollectiveBackend::Nccl(comms) => resolved.nccl(comms, stream),
            CollectiveBackend::Modelled => resolved.local(stream),
        }
    }))])
}
