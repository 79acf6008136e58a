//! Mixed-precision training: a model computing in bf16 (or any low-precision float type)
//! while its optimizer updates f32 master copies of the weights.
//!
//! Burn 0.21 has no automatic mixed precision. A model on `Cuda<bf16>` stores its weights
//! in bf16, whose 8-bit mantissa cannot register an update smaller than about 1/256 of a
//! weight: AdamW's steps of about `lr` leave a weight of 0.02 unchanged for any `lr` below
//! ~1e-4 (DeepSeek's sparse stage uses 7.3e-6). [`MasterWeights`] wraps an optimizer so that
//! it runs on f32 copies of the parameters (and keeps its moments in f32, since they take
//! the gradients' dtype); after each step the model receives the masters rounded to its own
//! dtype. The model keeps computing in its dtype; only the update is in f32.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

/// An optimizer stepping f32 master weights of a lower-precision model; see the
/// [module docs](self).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::optim::{AdamConfig, GradientsParams, Optimizer};
/// use burn::tensor::{DType, Tensor};
/// use dsa_burn::MasterWeights;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let model = LinearConfig::new(4, 2).init::<B>(&device);
/// // Masters in f64 here (the CPU backend has no bf16); on CUDA: bf16 model, f32 masters.
/// let mut optim = MasterWeights::new(AdamConfig::new().init(), DType::F64);
/// let x = Tensor::<B, 2>::ones([3, 4], &device);
/// let grads = GradientsParams::from_grads(model.forward(x).sum().backward(), &model);
/// let stepped = optim.step(1e-3, model.clone(), grads);
/// assert_eq!(stepped.weight.val().dtype(), DType::F32); // the model keeps its dtype
/// ```
pub struct MasterWeights<O, M: AutodiffModule<B>, B: AutodiffBackend> {
    inner: O,
    /// The master copy (made from the model at the first step).
    master: Option<M>,
    /// A loaded record of the master copy, put into a module at the next step (a record
    /// alone is not a module; clones of the optimizer share it, the first step takes it).
    pending: Arc<Mutex<Option<M::Record>>>,
    dtype: DType,
    backend: PhantomData<B>,
}

impl<O: Clone, M: AutodiffModule<B>, B: AutodiffBackend> Clone for MasterWeights<O, M, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            master: self.master.clone(),
            pending: self.pending.clone(),
            dtype: self.dtype,
            backend: PhantomData,
        }
    }
}

impl<O, M: AutodiffModule<B>, B: AutodiffBackend> MasterWeights<O, M, B> {
    /// Wraps `inner`, keeping the master weights (and so the optimizer state) in `dtype`
    /// (normally [`DType::F32`]).
    pub fn new(inner: O, dtype: DType) -> Self {
        Self { inner, master: None, pending: Arc::default(), dtype, backend: PhantomData }
    }

    /// The master weights for a step of `module`: the ones kept, else a loaded record, else
    /// the module's weights in the master dtype.
    fn masters(&mut self, module: &M) -> M {
        if let Some(master) = self.master.take() {
            return master;
        }
        let master = module.clone().map(&mut Cast { dtype: self.dtype });
        match self.pending.lock().expect("the pending record's lock").take() {
            Some(record) => master.load_record(record),
            None => master,
        }
    }

    /// Keeps the stepped masters and returns them in the model's own float types.
    fn finish(&mut self, module: M, master: M) -> M {
        let mut dtypes = Dtypes::default();
        module.visit(&mut dtypes);
        let stepped = master.clone().map(&mut dtypes);
        self.master = Some(master);
        stepped
    }
}

impl<O, M, B> Optimizer<M, B> for MasterWeights<O, M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    /// The inner optimizer's state and the master weights.
    type Record = (O::Record, Option<M::Record>);

    fn step(&mut self, lr: LearningRate, module: M, mut grads: GradientsParams) -> M {
        module.visit(&mut CastGrads::<B> { grads: &mut grads, dtype: self.dtype, backend: PhantomData });
        let master = self.masters(&module);
        let master = self.inner.step(lr, master, grads);
        self.finish(module, master)
    }

    /// Steps the masters with the gradients as they are (the inner optimizer's state then
    /// takes their dtype).
    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        let master = self.masters(&module);
        let master = self.inner.step_multi(lr, master, grads);
        self.finish(module, master)
    }

    fn to_record(&self) -> Self::Record {
        (self.inner.to_record(), self.master.clone().map(|m| m.into_record()))
    }

    fn load_record(self, (inner, master): Self::Record) -> Self {
        *self.pending.lock().expect("the pending record's lock") = master;
        Self { inner: self.inner.load_record(inner), master: None, ..self }
    }
}

/// Casts every float parameter to `dtype`, keeping its id and whether it requires grad.
struct Cast {
    dtype: DType,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.dtype;
        param.map(|t| recast(t, dtype))
    }
}

/// Records the float parameters' dtypes (visiting), then casts parameters back to them in
/// the same order (mapping).
#[derive(Default)]
struct Dtypes {
    dtypes: Vec<DType>,
    next: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.dtypes.push(param.val().dtype());
    }
}

impl<B: AutodiffBackend> ModuleMapper<B> for Dtypes {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.dtypes[self.next];
        self.next += 1;
        param.map(|t| recast(t, dtype))
    }
}

/// `t` in `dtype`, as a new leaf (no autodiff history) that requires grad where `t` did.
fn recast<B: AutodiffBackend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        return t;
    }
    let require_grad = t.is_require_grad();
    let t = Tensor::from_inner(t.inner().cast(dtype));
    if require_grad {
        t.require_grad()
    } else {
        t
    }
}

/// Casts the gradient of every parameter of the visited module to `dtype`.
struct CastGrads<'a, B> {
    grads: &'a mut GradientsParams,
    dtype: DType,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CastGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let grad = if grad.dtype() == self.dtype { grad } else { grad.cast(self.dtype) };
            self.grads.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}
