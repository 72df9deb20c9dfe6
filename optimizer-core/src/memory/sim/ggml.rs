//! A shape-only model of ggml's tensors and graphs (ggml/src/ggml.c of llama.cpp 11434): enough of
//! ggml to build llama.cpp's compute graphs node for node, with ggml's own shapes, strides, views,
//! names and node order, so that the scheduler and the graph allocator can be simulated on them.
//! No data is ever held: a tensor is its type, shape, strides, sources and flags.
//!
//! The constructors mirror ggml's API by name (`mul_mat`, `view_2d`, `cont`, …) so that a builder
//! ported from llama.cpp reads like the C++ it came from. A shape ggml would reject is recorded in
//! [`Ctx::error`] (the first one) instead of aborting; the simulation reports it.

use crate::gguf::GgmlType;

/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_SRC`.
pub const MAX_SRC: usize = 10;

/// `GGML_TENSOR_FLAG_INPUT`: an input of the graph (set by `ggml_set_input`).
pub const FLAG_INPUT: u8 = 1;
/// `GGML_TENSOR_FLAG_OUTPUT`: an output of the graph, never freed or reused (`ggml_set_output`).
pub const FLAG_OUTPUT: u8 = 2;
/// `GGML_TENSOR_FLAG_PARAM`: a trainable parameter.
pub const FLAG_PARAM: u8 = 4;
/// `GGML_TENSOR_FLAG_LOSS`.
pub const FLAG_LOSS: u8 = 8;
/// `GGML_TENSOR_FLAG_COMPUTE`: set on every node reached by `ggml_build_forward_expand`.
pub const FLAG_COMPUTE: u8 = 16;

/// A tensor of a [`Ctx`]: an index into its arena (stored plus one, so that an `Option<TensorId>`,
/// a tensor's source, takes four bytes: the tensors are scanned often, and smaller is faster).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(std::num::NonZeroU32);

impl TensorId {
    /// The tensor at arena index `index`.
    pub fn new(index: usize) -> TensorId {
        TensorId(std::num::NonZeroU32::MIN.saturating_add(index as u32))
    }

    /// The arena index.
    pub fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

impl std::fmt::Debug for TensorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorId({})", self.index())
    }
}

/// `enum ggml_unary_op`, the ones llama.cpp's graphs of the supported architectures use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // ggml's names
pub enum Unary {
    Neg,
    Relu,
    Gelu,
    Silu,
    Sigmoid,
    Softplus,
    Exp,
    Tanh,
}

/// `enum ggml_glu_op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // ggml's names
pub enum Glu {
    Reglu,
    Geglu,
    Swiglu,
    SwigluOai,
    GegluErf,
    GegluQuick,
}

/// `enum ggml_op`, the ones llama.cpp's graphs of the supported architectures use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // ggml's names
pub enum Op {
    None,
    Dup,
    Add,
    AddId,
    Sub,
    Mul,
    Div,
    Sqr,
    Sqrt,
    Log,
    SumRows,
    Mean,
    Repeat,
    Concat,
    Norm,
    RmsNorm,
    L2Norm,
    MulMat,
    MulMatId,
    Scale,
    Cpy,
    Cont,
    Reshape,
    View,
    Permute,
    Transpose,
    GetRows,
    SetRows,
    SoftMax,
    Rope,
    Clamp,
    Concat2,
    ArgSort,
    TopK,
    FlashAttnExt,
    SsmConv,
    SsmScan,
    GatedDeltaNet,
    Fill,
    Unary(Unary),
    Glu(Glu),
}

impl Op {
    /// `ggml_op_desc`: the op's name, or the unary / glu op's name for those.
    pub fn desc(self) -> &'static str {
        match self {
            Op::None => "NONE",
            Op::Dup => "DUP",
            Op::Add => "ADD",
            Op::AddId => "ADD_ID",
            Op::Sub => "SUB",
            Op::Mul => "MUL",
            Op::Div => "DIV",
            Op::Sqr => "SQR",
            Op::Sqrt => "SQRT",
            Op::Log => "LOG",
            Op::SumRows => "SUM_ROWS",
            Op::Mean => "MEAN",
            Op::Repeat => "REPEAT",
            Op::Concat | Op::Concat2 => "CONCAT",
            Op::Norm => "NORM",
            Op::RmsNorm => "RMS_NORM",
            Op::L2Norm => "L2_NORM",
            Op::MulMat => "MUL_MAT",
            Op::MulMatId => "MUL_MAT_ID",
            Op::Scale => "SCALE",
            Op::Cpy => "CPY",
            Op::Cont => "CONT",
            Op::Reshape => "RESHAPE",
            Op::View => "VIEW",
            Op::Permute => "PERMUTE",
            Op::Transpose => "TRANSPOSE",
            Op::GetRows => "GET_ROWS",
            Op::SetRows => "SET_ROWS",
            Op::SoftMax => "SOFT_MAX",
            Op::Rope => "ROPE",
            Op::Clamp => "CLAMP",
            Op::ArgSort => "ARGSORT",
            Op::TopK => "TOP_K",
            Op::FlashAttnExt => "FLASH_ATTN_EXT",
            Op::SsmConv => "SSM_CONV",
            Op::SsmScan => "SSM_SCAN",
            Op::GatedDeltaNet => "GATED_DELTA_NET",
            Op::Fill => "FILL",
            Op::Unary(u) => match u {
                Unary::Neg => "NEG",
                Unary::Relu => "RELU",
                Unary::Gelu => "GELU",
                Unary::Silu => "SILU",
                Unary::Sigmoid => "SIGMOID",
                Unary::Softplus => "SOFTPLUS",
                Unary::Exp => "EXP",
                Unary::Tanh => "TANH",
            },
            Op::Glu(g) => match g {
                Glu::Reglu => "REGLU",
                Glu::Geglu => "GEGLU",
                Glu::Swiglu => "SWIGLU",
                Glu::SwigluOai => "SWIGLU_OAI",
                Glu::GegluErf => "GEGLU_ERF",
                Glu::GegluQuick => "GEGLU_QUICK",
            },
        }
    }

    /// `ggml_op_can_inplace` (ggml-alloc.c:22-51): the allocator may give the node its parent's memory.
    pub fn can_inplace(self) -> bool {
        matches!(
            self,
            Op::Fill
                | Op::Scale
                | Op::Add
                | Op::AddId
                | Op::Sub
                | Op::Mul
                | Op::Div
                | Op::Sqr
                | Op::Sqrt
                | Op::Log
                | Op::Unary(_)
                | Op::Rope
                | Op::RmsNorm
                | Op::Clamp
                | Op::SoftMax
        )
    }

    /// The ops whose result is always a view of their source (`ggml_is_view_op`).
    pub fn is_view(self) -> bool {
        matches!(self, Op::View | Op::Reshape | Op::Permute | Op::Transpose)
    }
}

/// One tensor: what ggml's `struct ggml_tensor` holds, less the data and the name (which the
/// context keeps, [`Ctx::name`]: a tensor without it is `Copy`, and a cached graph is copied for
/// every placement). The fields the scheduler and the allocator read on every pass (op, flags,
/// sources, where the memory is) come first, so that they share a cache line (`repr(C)` keeps that
/// order).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Tensor {
    /// `op`.
    pub op: Op,
    /// `type`.
    pub ty: GgmlType,
    /// `flags` (`FLAG_*`).
    pub flags: u8,
    /// Whether the buffer holding the tensor is a weights buffer (`GGML_BACKEND_BUFFER_USAGE_WEIGHTS`,
    /// llama-model.cpp): the scheduler runs ops next to their weights and offloads ops on CPU
    /// weights. KV cache and recurrent-state buffers are not.
    pub weight: bool,
    /// Where the tensor's memory already is, as an index into the scheduler's backend list (at most
    /// [`crate::memory::sim::sched::MAX_BACKENDS`]), for tensors the graph allocator does not place:
    /// weights, the KV cache, recurrent state. `None` for everything the compute graph allocates
    /// (and for views, which take their base's).
    pub backend: Option<u8>,
    /// The backend llama.cpp pinned the node to with `ggml_backend_sched_set_tensor_backend` (the
    /// graph callback does it for some layer tensors), as an index into the scheduler's backend list.
    pub pinned: Option<u8>,
    /// `view_src`: the base tensor whose memory this one views (always a non-view).
    pub view_src: Option<TensorId>,
    /// `src`.
    pub src: [Option<TensorId>; MAX_SRC],
    /// `ne`: elements per dimension.
    pub ne: [i64; MAX_DIMS],
    /// `nb`: bytes per step in each dimension.
    pub nb: [u64; MAX_DIMS],
    /// `view_offs`: the byte offset into `view_src`.
    pub view_offs: u64,
    /// `op_params` as 32-bit words, where the op's parameters matter to a simulation (the view
    /// offset, permute axes, the glu variant's `swapped`); zero otherwise.
    pub op_params: [i32; 4],
}

impl Tensor {
    /// `ggml_nelements`.
    pub fn nelements(&self) -> i64 {
        self.ne.iter().product()
    }

    /// `ggml_nbytes` (ggml.c:1298-1321), for any strides.
    pub fn nbytes(&self) -> u64 {
        if self.ne.iter().any(|&n| n <= 0) {
            return 0;
        }
        let blck = self.ty.block_size();
        let ts = self.ty.type_size();
        if blck == 1 {
            let mut bytes = ts;
            for (i, &n) in self.ne.iter().enumerate() {
                bytes += (n as u64 - 1) * self.nb[i];
            }
            bytes
        } else {
            let mut bytes = self.ne[0] as u64 * self.nb[0] / blck;
            for i in 1..MAX_DIMS {
                bytes += (self.ne[i] as u64 - 1) * self.nb[i];
            }
            bytes
        }
    }

    /// `ggml_is_contiguous` (`ggml_is_contiguous_n(t, 0)`).
    pub fn is_contiguous(&self) -> bool {
        self.is_contiguous_n(0)
    }

    /// `ggml_is_contiguous_n` (ggml.c:1371-1390): contiguous ignoring the first `n` dimensions' gaps.
    pub fn is_contiguous_n(&self, n: usize) -> bool {
        let mut next_nb = self.ty.type_size();
        if self.ne[0] != self.ty.block_size() as i64 && self.nb[0] != next_nb {
            return false;
        }
        next_nb *= self.ne[0] as u64 / self.ty.block_size();
        for i in 1..MAX_DIMS {
            if self.ne[i] != 1 {
                if i > n {
                    if self.nb[i] != next_nb {
                        return false;
                    }
                    next_nb *= self.ne[i] as u64;
                } else {
                    // this dimension does not need to be contiguous
                    next_nb = self.ne[i] as u64 * self.nb[i];
                }
            }
        }
        true
    }

    /// `ggml_is_contiguous_m_n` (ggml.c:1474-1492): dimensions `m+1..n` packed after the ones below
    /// (dimensions `1..=m` may have any stride); `ggml_is_contiguous_{0,1,2}` are `(m, 4)`,
    /// `ggml_is_contiguous_to_{1,2,3}` are `(0, n)`.
    pub fn is_contiguous_m_n(&self, m: usize, n: usize) -> bool {
        let mut next_nb = self.ty.type_size();
        if self.ne[0] != self.ty.block_size() as i64 && self.nb[0] != next_nb {
            return false;
        }
        next_nb *= self.ne[0] as u64 / self.ty.block_size();
        for i in 1..n.min(MAX_DIMS) {
            if i > m {
                if self.ne[i] != 1 && self.nb[i] != next_nb {
                    return false;
                }
                next_nb *= self.ne[i] as u64;
            } else {
                // this dimension does not need to be contiguous
                next_nb = self.ne[i] as u64 * self.nb[i];
            }
        }
        true
    }

    /// `ggml_is_contiguous_rows`: every row is contiguous.
    pub fn is_contiguous_rows(&self) -> bool {
        self.ne[0] == self.ty.block_size() as i64 || self.nb[0] == self.ty.type_size()
    }

    /// `ggml_is_transposed`.
    pub fn is_transposed(&self) -> bool {
        self.nb[0] > self.nb[1]
    }

    /// `ggml_is_permuted`.
    pub fn is_permuted(&self) -> bool {
        self.nb[0] > self.nb[1] || self.nb[1] > self.nb[2] || self.nb[2] > self.nb[3]
    }
}

/// ggml's contiguous strides for `ty` and `ne`.
pub fn contiguous_nb(ty: GgmlType, ne: [i64; MAX_DIMS]) -> [u64; MAX_DIMS] {
    let mut nb = [0u64; MAX_DIMS];
    nb[0] = ty.type_size();
    nb[1] = nb[0] * (ne[0].max(0) as u64 / ty.block_size());
    for i in 2..MAX_DIMS {
        nb[i] = nb[i - 1] * ne[i - 1].max(0) as u64;
    }
    nb
}

/// A ggml context in `no_alloc` mode: the arena every tensor of a graph lives in.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// Every tensor, in creation order.
    pub tensors: Vec<Tensor>,
    /// The first shape ggml would have rejected (`GGML_ASSERT`), if any.
    pub error: Option<String>,
    /// Whether tensors get ggml's names. Nothing the scheduler or the allocator decides depends on
    /// a name; they are for comparing a graph with llama.cpp's traces and for error messages, and
    /// formatting them is a third of the time a prediction takes, so the simulation leaves them out.
    pub names: bool,
    /// `name` of each tensor by arena index (ggml keeps 63 bytes; kept whole here), as far as any
    /// tensor has one.
    name_table: Vec<String>,
    /// What to undo, while the context is lent to one simulation ([`Ctx::begin_journal`]).
    journal: Journal,
}

/// What a context had before the changes since [`Ctx::begin_journal`] (its memory kept from one
/// simulation to the next).
#[derive(Clone, Debug, Default)]
struct Journal {
    active: bool,
    /// The number of tensors: later ones are dropped.
    mark: usize,
    /// Each earlier tensor as it was before a change, in the order of the changes.
    tensors: Vec<(TensorId, Tensor)>,
    /// Each earlier name as it was before a change.
    names: Vec<(usize, String)>,
    error: Option<String>,
}

impl Ctx {
    /// An empty context whose tensors get ggml's names.
    pub fn new() -> Ctx {
        Ctx { names: true, ..Ctx::default() }
    }

    /// An empty context whose tensors stay unnamed ([`Ctx::names`]).
    pub fn unnamed() -> Ctx {
        Ctx::default()
    }

    /// Names `r` after `a` with ggml's `suffix` (` (view)`, ` (cont)`, …), when names are kept.
    fn name_after(&mut self, r: TensorId, a: TensorId, suffix: &str) {
        if self.names {
            let name = format!("{}{suffix}", self.name(a));
            self.set_name(r, name);
        }
    }

    /// `name` of `id`: empty when it has none (or the context keeps no names).
    pub fn name(&self, id: TensorId) -> &str {
        self.name_table.get(id.index()).map_or("", String::as_str)
    }

    /// The tensor `id`.
    pub fn t(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.index()]
    }

    /// The tensor `id`, to change (name, flags).
    pub fn t_mut(&mut self, id: TensorId) -> &mut Tensor {
        let j = &mut self.journal;
        if j.active && id.index() < j.mark {
            j.tensors.push((id, self.tensors[id.index()]));
        }
        &mut self.tensors[id.index()]
    }

    /// Starts recording changes, so that [`Ctx::rollback`] can undo them: the tensors added
    /// after this point and every change to the tensors before it (a cached graph is scheduled in
    /// place for each placement, then given back as it was). A journal already open is kept.
    pub fn begin_journal(&mut self) {
        let j = &mut self.journal;
        if !j.active {
            j.active = true;
            j.mark = self.tensors.len();
            j.error.clone_from(&self.error);
        }
    }

    /// Undoes every change since [`Ctx::begin_journal`] and stops recording.
    pub fn rollback(&mut self) {
        let j = &mut self.journal;
        if !j.active {
            return;
        }
        j.active = false;
        for (id, t) in j.tensors.drain(..).rev() {
            self.tensors[id.index()] = t;
        }
        self.tensors.truncate(j.mark);
        for (i, name) in j.names.drain(..).rev() {
            self.name_table[i] = name;
        }
        self.name_table.truncate(j.mark);
        self.error = j.error.take();
    }

    /// `ne` of `id`.
    pub fn ne(&self, id: TensorId) -> [i64; MAX_DIMS] {
        self.t(id).ne
    }

    /// `nb` of `id`.
    pub fn nb(&self, id: TensorId) -> [u64; MAX_DIMS] {
        self.t(id).nb
    }

    /// Records the first rejected shape.
    pub fn check(&mut self, ok: bool, what: impl FnOnce(&Ctx) -> String) {
        if !ok && self.error.is_none() {
            self.error = Some(what(self));
        }
    }

    /// `ggml_new_tensor_impl`: a new tensor, a view of `view_src` at `view_offs` when given.
    pub fn new_tensor_impl(
        &mut self,
        ty: GgmlType,
        ne: [i64; MAX_DIMS],
        view_src: Option<TensorId>,
        view_offs: u64,
    ) -> TensorId {
        // find the base tensor and absolute offset
        let (view_src, view_offs) = match view_src {
            Some(v) => match self.t(v).view_src {
                Some(base) => (Some(base), view_offs + self.t(v).view_offs),
                None => (Some(v), view_offs),
            },
            None => (None, 0),
        };
        if ne[0] % ty.block_size() as i64 != 0 {
            self.check(false, |_| format!("{} row of {} elements is not whole blocks", ty.name(), ne[0]));
        }
        let id = TensorId::new(self.tensors.len());
        self.tensors.push(Tensor {
            op: Op::None,
            ty,
            ne,
            nb: contiguous_nb(ty, ne),
            src: [None; MAX_SRC],
            view_src,
            view_offs,
            flags: 0,
            backend: None,
            pinned: None,
            weight: false,
            op_params: [0; 4],
        });
        id
    }

    /// `ggml_new_tensor` with up to four dimensions (missing ones are 1).
    pub fn new_tensor(&mut self, ty: GgmlType, ne: &[i64]) -> TensorId {
        let mut full = [1i64; MAX_DIMS];
        full[..ne.len()].copy_from_slice(ne);
        self.new_tensor_impl(ty, full, None, 0)
    }

    /// A tensor whose memory is already allocated on scheduler backend `backend` (a weight, a KV
    /// cache or recurrent-state tensor), with its name.
    pub fn new_resident(&mut self, name: &str, ty: GgmlType, ne: &[i64], backend: usize) -> TensorId {
        let id = self.new_tensor(ty, ne);
        self.set_name(id, name);
        self.t_mut(id).backend = Some(backend as u8);
        id
    }

    /// A model weight already loaded into a weights buffer of scheduler backend `backend`.
    pub fn new_weight(&mut self, name: &str, ty: GgmlType, ne: &[i64], backend: usize) -> TensorId {
        let id = self.new_resident(name, ty, ne, backend);
        self.t_mut(id).weight = true;
        id
    }

    /// `ggml_set_name`.
    pub fn set_name(&mut self, id: TensorId, name: impl Into<String>) -> TensorId {
        if self.names {
            if self.name_table.len() <= id.index() {
                self.name_table.resize(id.index() + 1, String::new());
            }
            let old = std::mem::replace(&mut self.name_table[id.index()], name.into());
            let j = &mut self.journal;
            if j.active && id.index() < j.mark {
                j.names.push((id.index(), old));
            }
        }
        id
    }

    /// `ggml_set_input`.
    pub fn set_input(&mut self, id: TensorId) {
        self.t_mut(id).flags |= FLAG_INPUT;
    }

    /// `ggml_set_output`.
    pub fn set_output(&mut self, id: TensorId) {
        self.t_mut(id).flags |= FLAG_OUTPUT;
    }

    fn with_op(&mut self, id: TensorId, op: Op, src: &[Option<TensorId>]) -> TensorId {
        let t = self.t_mut(id);
        t.op = op;
        for (i, s) in src.iter().enumerate() {
            t.src[i] = *s;
        }
        id
    }

    /// `ggml_dup_tensor`: a new contiguous tensor of `a`'s type and shape.
    pub fn dup_tensor(&mut self, a: TensorId) -> TensorId {
        let (ty, ne) = (self.t(a).ty, self.t(a).ne);
        self.new_tensor_impl(ty, ne, None, 0)
    }

    /// `ggml_dup` (ggml.c `ggml_dup_impl`): a contiguous copy of `a`.
    pub fn dup(&mut self, a: TensorId) -> TensorId {
        let r = self.dup_tensor(a);
        self.with_op(r, Op::Dup, &[Some(a)])
    }

    /// `ggml_view_tensor`: a view of all of `a` with its strides, named "`a` (view)".
    pub fn view_tensor(&mut self, a: TensorId) -> TensorId {
        let (ty, ne, nb) = (self.t(a).ty, self.t(a).ne, self.t(a).nb);
        let r = self.new_tensor_impl(ty, ne, Some(a), 0);
        self.t_mut(r).nb = nb;
        self.name_after(r, a, " (view)");
        r
    }

    fn unary_like(&mut self, op: Op, a: TensorId, inplace: bool) -> TensorId {
        let r = if inplace { self.view_tensor(a) } else { self.dup_tensor(a) };
        self.with_op(r, op, &[Some(a)])
    }

    fn binary_like(&mut self, op: Op, a: TensorId, b: TensorId, inplace: bool) -> TensorId {
        let ok = can_repeat(&self.ne(b), &self.ne(a));
        self.check(ok, |c| format!("{}: {:?} does not repeat to {:?}", op.desc(), c.ne(b), c.ne(a)));
        let r = if inplace { self.view_tensor(a) } else { self.dup_tensor(a) };
        self.with_op(r, op, &[Some(a), Some(b)])
    }

    /// `ggml_add`.
    pub fn add(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.binary_like(Op::Add, a, b, false)
    }

    /// `ggml_add_inplace`.
    pub fn add_inplace(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.binary_like(Op::Add, a, b, true)
    }

    /// `ggml_add_id`.
    pub fn add_id(&mut self, a: TensorId, b: TensorId, ids: TensorId) -> TensorId {
        let r = self.dup_tensor(a);
        self.with_op(r, Op::AddId, &[Some(a), Some(b), Some(ids)])
    }

    /// `ggml_sub`.
    pub fn sub(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.binary_like(Op::Sub, a, b, false)
    }

    /// `ggml_mul`.
    pub fn mul(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.binary_like(Op::Mul, a, b, false)
    }

    /// `ggml_mul_inplace`.
    pub fn mul_inplace(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.binary_like(Op::Mul, a, b, true)
    }

    /// `ggml_div`.
    pub fn div(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.binary_like(Op::Div, a, b, false)
    }

    /// `ggml_sqr`.
    pub fn sqr(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Sqr, a, false)
    }

    /// `ggml_sqrt`.
    pub fn sqrt(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Sqrt, a, false)
    }

    /// `ggml_log`.
    pub fn log(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Log, a, false)
    }

    /// `ggml_unary` (`ggml_silu`, `ggml_sigmoid`, `ggml_softplus`, …).
    pub fn unary(&mut self, a: TensorId, op: Unary) -> TensorId {
        self.unary_like(Op::Unary(op), a, false)
    }

    /// `ggml_unary_inplace`.
    pub fn unary_inplace(&mut self, a: TensorId, op: Unary) -> TensorId {
        self.unary_like(Op::Unary(op), a, true)
    }

    /// `ggml_scale` (and `ggml_scale_bias`).
    pub fn scale(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Scale, a, false)
    }

    /// `ggml_scale_inplace`.
    pub fn scale_inplace(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Scale, a, true)
    }

    /// `ggml_clamp` (ggml.c:4119-4142): a new tensor of `a`'s shape (`ggml_clamp_inplace` is the
    /// view).
    pub fn clamp(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Clamp, a, false)
    }

    /// `ggml_rms_norm`.
    pub fn rms_norm(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::RmsNorm, a, false)
    }

    /// `ggml_norm`.
    pub fn norm(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::Norm, a, false)
    }

    /// `ggml_l2_norm`.
    pub fn l2_norm(&mut self, a: TensorId) -> TensorId {
        self.unary_like(Op::L2Norm, a, false)
    }

    /// `ggml_rope_ext` (and `ggml_rope_multi`): the result has `a`'s shape; `b` holds the positions,
    /// `c` the optional frequency factors.
    pub fn rope(&mut self, a: TensorId, b: TensorId, c: Option<TensorId>) -> TensorId {
        let r = self.dup_tensor(a);
        self.with_op(r, Op::Rope, &[Some(a), Some(b), c])
    }

    /// `ggml_soft_max_ext` with an optional mask and optional attention sinks (`ggml_soft_max_add_sinks`
    /// sets `src[2]`).
    pub fn soft_max_ext(&mut self, a: TensorId, mask: Option<TensorId>) -> TensorId {
        let r = self.dup_tensor(a);
        self.with_op(r, Op::SoftMax, &[Some(a), mask])
    }

    /// `ggml_soft_max_ext_inplace`.
    pub fn soft_max_ext_inplace(&mut self, a: TensorId, mask: Option<TensorId>) -> TensorId {
        let r = self.view_tensor(a);
        self.with_op(r, Op::SoftMax, &[Some(a), mask])
    }

    /// `ggml_soft_max_add_sinks`: sets `src[2]`.
    pub fn soft_max_add_sinks(&mut self, a: TensorId, sinks: Option<TensorId>) {
        self.t_mut(a).src[2] = sinks;
    }

    /// `ggml_sum_rows`.
    pub fn sum_rows(&mut self, a: TensorId) -> TensorId {
        let t = self.t(a);
        let (ty, ne) = (t.ty, [1, t.ne[1], t.ne[2], t.ne[3]]);
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.with_op(r, Op::SumRows, &[Some(a)])
    }

    /// `ggml_repeat`: `a` repeated to `b`'s shape.
    pub fn repeat(&mut self, a: TensorId, b: TensorId) -> TensorId {
        let (ty, ne) = (self.t(a).ty, self.ne(b));
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.with_op(r, Op::Repeat, &[Some(a)])
    }

    /// `ggml_repeat_4d`.
    pub fn repeat_4d(&mut self, a: TensorId, ne: [i64; MAX_DIMS]) -> TensorId {
        let ty = self.t(a).ty;
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.with_op(r, Op::Repeat, &[Some(a)])
    }

    /// `ggml_concat` along `dim`.
    pub fn concat(&mut self, a: TensorId, b: TensorId, dim: usize) -> TensorId {
        let (na, nb) = (self.ne(a), self.ne(b));
        let mut ne = na;
        ne[dim] = na[dim] + nb[dim];
        let ok = (0..MAX_DIMS).all(|d| d == dim || na[d] == nb[d]);
        self.check(ok, |_| format!("concat: {na:?} and {nb:?} differ beside dim {dim}"));
        let ty = self.t(a).ty;
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.t_mut(r).op_params[0] = dim as i32;
        self.with_op(r, Op::Concat, &[Some(a), Some(b)])
    }

    /// `ggml_mul_mat`.
    pub fn mul_mat(&mut self, a: TensorId, b: TensorId) -> TensorId {
        let (na, nb) = (self.ne(a), self.ne(b));
        let ok = na[0] == nb[0] && nb[2] % na[2] == 0 && nb[3] % na[3] == 0;
        self.check(ok, |_| format!("mul_mat: {na:?} x {nb:?}"));
        let r = self.new_tensor_impl(GgmlType::F32, [na[1], nb[1], nb[2], nb[3]], None, 0);
        self.with_op(r, Op::MulMat, &[Some(a), Some(b)])
    }

    /// `ggml_mul_mat_id`.
    pub fn mul_mat_id(&mut self, a: TensorId, b: TensorId, ids: TensorId) -> TensorId {
        let (na, nb, ni) = (self.ne(a), self.ne(b), self.ne(ids));
        let ok = na[0] == nb[0] && ni[1] == nb[2] && nb[1] > 0 && ni[0] % nb[1] == 0;
        self.check(ok, |_| format!("mul_mat_id: {na:?} x {nb:?} by {ni:?}"));
        let r = self.new_tensor_impl(GgmlType::F32, [na[1], ni[0], nb[2], 1], None, 0);
        self.with_op(r, Op::MulMatId, &[Some(a), Some(b), Some(ids)])
    }

    /// `ggml_cpy`: copies `a` into `b`; the result is a view of `b`.
    pub fn cpy(&mut self, a: TensorId, b: TensorId) -> TensorId {
        let ok = self.t(a).nelements() == self.t(b).nelements();
        self.check(ok, |c| format!("cpy: {:?} into {:?}", c.ne(a), c.ne(b)));
        let r = self.view_tensor(b);
        if self.names {
            let name = if self.name(b).is_empty() {
                format!("{} (copy)", self.name(a))
            } else {
                format!("{} (copy of {})", self.name(b), self.name(a))
            };
            self.set_name(r, name);
        }
        self.with_op(r, Op::Cpy, &[Some(a), Some(b)])
    }

    /// `ggml_cast`: `a` converted to `ty` in a new tensor.
    pub fn cast(&mut self, a: TensorId, ty: GgmlType) -> TensorId {
        let ne = self.ne(a);
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.name_after(r, a, " (copy)");
        self.with_op(r, Op::Cpy, &[Some(a), Some(r)])
    }

    /// `ggml_cont`.
    pub fn cont(&mut self, a: TensorId) -> TensorId {
        let r = self.dup_tensor(a);
        self.name_after(r, a, " (cont)");
        self.with_op(r, Op::Cont, &[Some(a)])
    }

    /// `ggml_cont_4d` (and `_1d` … `_3d` with trailing ones).
    pub fn cont_4d(&mut self, a: TensorId, ne: [i64; MAX_DIMS]) -> TensorId {
        let ok = self.t(a).nelements() == ne.iter().product::<i64>();
        self.check(ok, |c| format!("cont_4d: {:?} to {ne:?}", c.ne(a)));
        let ty = self.t(a).ty;
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.name_after(r, a, " (cont)");
        self.with_op(r, Op::Cont, &[Some(a)])
    }

    /// `ggml_reshape_{1,2,3,4}d`: `a` must be contiguous.
    pub fn reshape(&mut self, a: TensorId, ne: &[i64]) -> TensorId {
        let mut full = [1i64; MAX_DIMS];
        full[..ne.len()].copy_from_slice(ne);
        let ok = self.t(a).is_contiguous() && self.t(a).nelements() == full.iter().product::<i64>();
        self.check(ok, |c| format!("reshape: {:?} to {full:?}", c.ne(a)));
        let ty = self.t(a).ty;
        let r = self.new_tensor_impl(ty, full, Some(a), 0);
        self.name_after(r, a, " (reshaped)");
        self.with_op(r, Op::Reshape, &[Some(a)])
    }

    /// `ggml_view_{1,2,3,4}d`: `ne` (up to four) with the strides `nb1..` of the dimensions above the
    /// first (`nb.len() == ne.len() - 1`), at byte `offset` into `a`.
    pub fn view(&mut self, a: TensorId, ne: &[i64], nb: &[u64], offset: u64) -> TensorId {
        let mut full = [1i64; MAX_DIMS];
        full[..ne.len()].copy_from_slice(ne);
        let ty = self.t(a).ty;
        let r = self.new_tensor_impl(ty, full, Some(a), offset);
        self.name_after(r, a, " (view)");
        let mut strides = contiguous_nb(ty, full);
        for (i, &s) in nb.iter().enumerate() {
            strides[i + 1] = s;
        }
        for i in (nb.len() + 1)..MAX_DIMS {
            strides[i] = strides[i - 1] * full[i - 1].max(0) as u64;
        }
        let t = self.t_mut(r);
        t.nb = strides;
        t.op_params[0] = offset as i32;
        t.op_params[1] = (offset >> 32) as i32;
        let out = self.with_op(r, Op::View, &[Some(a)]);
        let fits = self.t(out).nbytes() + self.t(out).view_offs
            <= self.t(self.t(out).view_src.unwrap_or(a)).nbytes()
            || self.t(out).nbytes() == 0;
        self.check(fits, |c| format!("view {full:?} at {offset} beyond {:?}", c.ne(a)));
        out
    }

    /// `ggml_permute`.
    pub fn permute(&mut self, a: TensorId, axes: [usize; MAX_DIMS]) -> TensorId {
        let r = self.view_tensor(a);
        let (ne_a, nb_a) = (self.ne(a), self.nb(a));
        let mut ne = [0i64; MAX_DIMS];
        let mut nb = [0u64; MAX_DIMS];
        for i in 0..MAX_DIMS {
            ne[axes[i]] = ne_a[i];
            nb[axes[i]] = nb_a[i];
        }
        self.name_after(r, a, " (permuted)");
        let t = self.t_mut(r);
        t.ne = ne;
        t.nb = nb;
        for (i, &ax) in axes.iter().enumerate() {
            t.op_params[i] = ax as i32;
        }
        self.with_op(r, Op::Permute, &[Some(a)])
    }

    /// `ggml_transpose`.
    pub fn transpose(&mut self, a: TensorId) -> TensorId {
        let r = self.view_tensor(a);
        self.name_after(r, a, " (transposed)");
        let t = self.t_mut(r);
        t.ne.swap(0, 1);
        t.nb.swap(0, 1);
        self.with_op(r, Op::Transpose, &[Some(a)])
    }

    /// `ggml_get_rows`: rows `b` of `a`.
    pub fn get_rows(&mut self, a: TensorId, b: TensorId) -> TensorId {
        let (na, nb) = (self.ne(a), self.ne(b));
        let ty = if self.t(a).ty == GgmlType::I32 { GgmlType::I32 } else { GgmlType::F32 };
        let r = self.new_tensor_impl(ty, [na[0], nb[0], nb[1], nb[2]], None, 0);
        self.with_op(r, Op::GetRows, &[Some(a), Some(b)])
    }

    /// `ggml_set_rows`: rows `b` written into `a` at indices `c`; the result is a view of `a`.
    pub fn set_rows(&mut self, a: TensorId, b: TensorId, c: TensorId) -> TensorId {
        let r = self.view_tensor(a);
        self.with_op(r, Op::SetRows, &[Some(b), Some(c), Some(a)])
    }

    /// `ggml_glu_split` (two inputs) or `ggml_glu` (one input, halved), for `op`.
    pub fn glu(&mut self, a: TensorId, b: Option<TensorId>, op: Glu, swapped: bool) -> TensorId {
        let (ty, mut ne) = (self.t(a).ty, self.ne(a));
        if b.is_none() {
            ne[0] /= 2;
        }
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.t_mut(r).op_params[1] = i32::from(swapped);
        self.with_op(r, Op::Glu(op), &[Some(a), b])
    }

    /// `ggml_fill` (ggml.c:5398-5415): a new tensor of `a`'s shape filled with a constant.
    pub fn fill(&mut self, a: TensorId) -> TensorId {
        let ok = self.t(a).is_contiguous() && matches!(self.t(a).ty, GgmlType::F32 | GgmlType::F16);
        self.check(ok, |c| format!("fill: {:?} is not a contiguous f32/f16 tensor", c.ne(a)));
        self.unary_like(Op::Fill, a, false)
    }

    /// `ggml_argsort`.
    pub fn argsort(&mut self, a: TensorId) -> TensorId {
        let ne = self.ne(a);
        let r = self.new_tensor_impl(GgmlType::I32, ne, None, 0);
        self.with_op(r, Op::ArgSort, &[Some(a)])
    }

    /// `ggml_argsort_top_k`: an argsort and a view of its first `k` columns.
    pub fn argsort_top_k(&mut self, a: TensorId, k: i64) -> TensorId {
        let s = self.argsort(a);
        let (ne, nb) = (self.ne(s), self.nb(s));
        self.view(s, &[k, ne[1], ne[2], ne[3]], &[nb[1], nb[2], nb[3]], 0)
    }

    /// `ggml_top_k`.
    pub fn top_k(&mut self, a: TensorId, k: i64) -> TensorId {
        let ne = self.ne(a);
        let r = self.new_tensor_impl(GgmlType::I32, [k, ne[1], ne[2], ne[3]], None, 0);
        self.with_op(r, Op::TopK, &[Some(a)])
    }

    #[allow(clippy::many_single_char_names)] // ggml's names
    /// `ggml_flash_attn_ext` (sinks, when given, go to `src[4]` as `ggml_flash_attn_ext_add_sinks`).
    pub fn flash_attn_ext(
        &mut self,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        mask: Option<TensorId>,
        sinks: Option<TensorId>,
    ) -> TensorId {
        let (nq, nv) = (self.ne(q), self.ne(v));
        let r = self.new_tensor_impl(GgmlType::F32, [nv[0], nq[2], nq[1], nq[3]], None, 0);
        self.with_op(r, Op::FlashAttnExt, &[Some(q), Some(k), Some(v), mask, sinks])
    }

    /// `ggml_ssm_conv`.
    pub fn ssm_conv(&mut self, sx: TensorId, c: TensorId) -> TensorId {
        let (nsx, nc) = (self.ne(sx), self.ne(c));
        let n_t = nsx[0] - nc[0] + 1;
        let r = self.new_tensor_impl(GgmlType::F32, [nc[1], n_t, nsx[2], 1], None, 0);
        self.with_op(r, Op::SsmConv, &[Some(sx), Some(c)])
    }

    /// `ggml_gated_delta_net` with `k_slots` snapshot slots (`K`).
    #[allow(clippy::too_many_arguments, clippy::many_single_char_names)] // ggml's signature
    pub fn gated_delta_net(
        &mut self,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        g: TensorId,
        beta: TensorId,
        state: TensorId,
        k_slots: i64,
    ) -> TensorId {
        let nv = self.ne(v);
        let (s_v, h, n_tokens, n_seqs) = (nv[0], nv[1], nv[2], nv[3]);
        let ne = [s_v * h, n_tokens * n_seqs + k_slots * s_v * n_seqs, 1, 1];
        let r = self.new_tensor_impl(GgmlType::F32, ne, None, 0);
        self.t_mut(r).op_params[0] = k_slots as i32;
        self.with_op(r, Op::GatedDeltaNet, &[Some(q), Some(k), Some(v), Some(g), Some(beta), Some(state)])
    }

    /// Any other op: a new tensor of `ty` and `ne` with sources `src` (for ops this module has no
    /// constructor for yet; prefer adding one).
    pub fn op(&mut self, op: Op, ty: GgmlType, ne: [i64; MAX_DIMS], src: &[Option<TensorId>]) -> TensorId {
        let r = self.new_tensor_impl(ty, ne, None, 0);
        self.with_op(r, op, src)
    }
}

/// `ggml_can_repeat`: `a` broadcasts to `b`.
pub fn can_repeat(a: &[i64; MAX_DIMS], b: &[i64; MAX_DIMS]) -> bool {
    a.iter().all(|&n| n == 0) || (0..MAX_DIMS).all(|i| a[i] != 0 && b[i] % a[i] == 0)
}

/// A computation graph: `struct ggml_cgraph`'s nodes and leafs, in ggml's order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Nodes (tensors with an op, or parameters), in evaluation order.
    pub nodes: Vec<TensorId>,
    /// Leafs (tensors without an op: inputs, weights, constants).
    pub leafs: Vec<TensorId>,
    /// Whether each tensor of the context (by arena index) is in the graph: ggml's visited hash set.
    visited: Vec<bool>,
    /// The depth-first walk's stack, kept between calls: (tensor, next source index to look at).
    stack: Vec<(TensorId, usize)>,
    /// The compute-flag walk's work list, kept between calls.
    pending: Vec<TensorId>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Whether `id` is in the graph.
    pub fn contains(&self, id: TensorId) -> bool {
        self.visited.get(id.index()).copied().unwrap_or(false)
    }

    /// `ggml_build_forward_expand`: adds `t` and every tensor it depends on that is not in the graph
    /// yet, depth first, sources left to right (ggml.c `ggml_visit_parents_graph`). Unnamed leafs get
    /// ggml's `leaf_N` name and unnamed nodes `node_N`.
    pub fn build_forward_expand(&mut self, ctx: &mut Ctx, t: TensorId) {
        self.visit(ctx, t, true);
    }

    /// `ggml_build_forward_select` (ggml.c:7332-7344): adds every one of `tensors` to the graph, in
    /// order, but marks only the subgraph of `tensors[idx]` for computation (`FLAG_COMPUTE`); returns
    /// `tensors[idx]`.
    pub fn build_forward_select(&mut self, ctx: &mut Ctx, tensors: &[TensorId], idx: usize) -> TensorId {
        for (i, &t) in tensors.iter().enumerate() {
            self.visit(ctx, t, i == idx);
        }
        tensors[idx]
    }

    /// `ggml_visit_parents_graph` (ggml.c:7245-7309) with `compute`, iteratively.
    fn visit(&mut self, ctx: &mut Ctx, root: TensorId, compute: bool) {
        if !self.enter(ctx, root, compute) {
            return;
        }
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push((root, 0));
        while let Some(&mut (id, ref mut next)) = stack.last_mut() {
            if *next < MAX_SRC {
                let k = *next;
                *next += 1;
                if let Some(src) = ctx.t(id).src[k] {
                    if self.enter(ctx, src, compute) {
                        stack.push((src, 0));
                    }
                }
                continue;
            }
            stack.pop();
            let t = *ctx.t(id);
            if t.op == Op::None && t.flags & FLAG_PARAM == 0 {
                if ctx.names && ctx.name(id).is_empty() {
                    let name = format!("leaf_{}", self.leafs.len());
                    ctx.set_name(id, name);
                }
                self.leafs.push(id);
            } else {
                if ctx.names && ctx.name(id).is_empty() {
                    let name = format!("node_{}", self.nodes.len());
                    ctx.set_name(id, name);
                }
                self.nodes.push(id);
            }
        }
        self.stack = stack;
    }

    /// The head of `ggml_visit_parents_graph`: flags `id` for computation and, when it is already in
    /// the graph, passes the flag on to its sources that lack it; true when `id` is new.
    fn enter(&mut self, ctx: &mut Ctx, id: TensorId, compute: bool) -> bool {
        if compute && ctx.t(id).op != Op::None {
            ctx.t_mut(id).flags |= FLAG_COMPUTE;
        }
        if self.visited.len() < ctx.tensors.len() {
            self.visited.resize(ctx.tensors.len(), false);
        }
        if !self.visited[id.index()] {
            self.visited[id.index()] = true;
            return true;
        }
        if compute {
            // "update the compute flag regardless" (ggml.c:7256-7263)
            let mut pending = std::mem::take(&mut self.pending);
            pending.clear();
            pending.push(id);
            while let Some(n) = pending.pop() {
                for src in ctx.t(n).src.into_iter().flatten() {
                    if ctx.t(src).flags & FLAG_COMPUTE == 0 {
                        if ctx.t(src).op != Op::None {
                            ctx.t_mut(src).flags |= FLAG_COMPUTE;
                        }
                        pending.push(src);
                    }
                }
            }
            self.pending = pending;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every change made while the journal is open is undone: sources, flags, names, the first
    /// error and the tensors added; the next journal starts clean.
    #[test]
    fn rollback_gives_the_context_back_as_it_was() {
        let mut ctx = Ctx::new();
        let a = ctx.new_tensor(GgmlType::F32, &[8, 4]);
        ctx.set_name(a, "a");
        let b = ctx.new_tensor(GgmlType::F32, &[8, 4]);
        let sum = ctx.add(a, b);
        ctx.set_name(sum, "sum");
        let (tensors, names) = (ctx.tensors.clone(), ctx.name_table.clone());
        for _ in 0..2 {
            ctx.begin_journal();
            let copy = ctx.dup_tensor(a);
            ctx.set_name(copy, "copy");
            ctx.t_mut(sum).src[0] = Some(copy);
            ctx.t_mut(sum).flags |= FLAG_OUTPUT;
            ctx.set_input(a);
            ctx.set_name(a, "renamed");
            let bad = ctx.new_tensor(GgmlType::F32, &[3, 4]);
            ctx.add(a, bad);
            assert!(ctx.error.is_some());
            assert_eq!(ctx.name(sum), "sum");
            ctx.rollback();
            assert_eq!(ctx.tensors, tensors);
            assert_eq!(ctx.name_table, names);
            assert_eq!(ctx.error, None);
        }
        // outside a journal, changes stay
        ctx.set_input(b);
        ctx.rollback();
        assert_eq!(ctx.t(b).flags & FLAG_INPUT, FLAG_INPUT);
    }
}
