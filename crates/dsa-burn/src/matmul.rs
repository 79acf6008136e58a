//! cubek's matrix-product kernels with a chosen strategy on Burn's CubeCL backends, and
//! their timing (`dsa-cli bench-matmul`).
//!
//! Burn's `float_matmul` on CubeCL launches cubek's `Strategy::Auto` (the simple cyclic
//! cmma kernel with an inferred blueprint; the unit kernel where the device has no tensor
//! cores) unless Burn's `autotune` feature is on. With the `cubecl-backend` feature,
//! [`launch`] runs any other strategy on the same tensors, as burn-cubecl's `launch_matmul`
//! does (non-quantized inputs), and [`bench()`] times a list of them on the products of a
//! linear layer: its forward and both gradients ([`Layout`]), with the operands laid out as
//! Burn's autodiff produces them. The projections ([`crate::ops::linear`]) launch the
//! strategy that `cubecl::linear_strategy` picks from the resulting table.
//!
//! The shape and result types here exist on every backend, so that a command line can
//! describe a benchmark it cannot run.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How the operands of `out [M, N] = lhs [M, K] · rhs [K, N]` lie in memory: `N` a
/// row-major matrix, `T` a transposed view (column-major, as `swap_dims` of a row-major
/// tensor gives). The three products of a linear layer `y = x · W` are `NN` (its forward),
/// `NT` (the input gradient `dX = dY · Wᵀ`) and `TN` (the weight gradient `dW = Xᵀ · dY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Layout {
    /// Both operands row-major: the forward `y = x · W`.
    NN,
    /// `rhs` transposed: the input gradient `dX = dY · Wᵀ`.
    NT,
    /// `lhs` transposed: the weight gradient `dW = Xᵀ · dY`.
    TN,
    /// Both transposed.
    TT,
}

impl Layout {
    /// The layout of two operands from the strides of their last two dims: an operand is
    /// transposed where its rows are the unit-stride dim and its columns are not.
    ///
    /// ```
    /// use dsa_burn::matmul::Layout;
    /// assert_eq!(Layout::of(&[768, 1], &[384, 1]), Layout::NN);
    /// // xᵀ [1, 768, 8192]: the transposed view of x [1, 8192, 768]; dY [1, 8192, 384].
    /// assert_eq!(Layout::of(&[8192 * 768, 1, 768], &[8192 * 384, 384, 1]), Layout::TN);
    /// assert_eq!(Layout::of(&[384, 1], &[1, 384]), Layout::NT); // Wᵀ: a view of W [768, 384]
    /// ```
    pub fn of(lhs_strides: &[usize], rhs_strides: &[usize]) -> Self {
        let transposed = |s: &[usize]| s.len() >= 2 && s[s.len() - 1] != 1 && s[s.len() - 2] == 1;
        match (transposed(lhs_strides), transposed(rhs_strides)) {
            (false, false) => Layout::NN,
            (false, true) => Layout::NT,
            (true, false) => Layout::TN,
            (true, true) => Layout::TT,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for Layout {
    type Err = String;

    /// `nn`, `nt`, `tn` or `tt`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "NN" => Ok(Layout::NN),
            "NT" => Ok(Layout::NT),
            "TN" => Ok(Layout::TN),
            "TT" => Ok(Layout::TT),
            _ => Err(format!("unknown layout `{s}` (NN, NT, TN or TT)")),
        }
    }
}

/// A linear layer to time: `y [M, N] = x [M, K] · W [K, N]` over `M` tokens, `K` inputs and
/// `N` outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// What it is (e.g. the projections of that size).
    pub name: String,
    /// Tokens.
    pub m: usize,
    /// Inputs of the layer.
    pub k: usize,
    /// Outputs of the layer.
    pub n: usize,
}

impl MatmulShape {
    /// The product of `layout` for this layer, `[m, k, n]` as `out [m, n] = lhs [m, k] ·
    /// rhs [k, n]`: the forward `[M, K, N]`, the input gradient `[M, N, K]`, the weight
    /// gradient `[K, M, N]` (the tokens are the reduced dim). Both transposed: as the forward.
    pub fn product(&self, layout: Layout) -> [usize; 3] {
        let (m, k, n) = (self.m, self.k, self.n);
        match layout {
            Layout::NN | Layout::TT => [m, k, n],
            Layout::NT => [m, n, k],
            Layout::TN => [k, m, n],
        }
    }

    /// Floating-point operations of one product (`2·M·K·N`, any layout).
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// How [`bench()`] times each (shape, layout, strategy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchSettings {
    /// Untimed launches first, each synchronised (kernel compilation, memory pools).
    pub warm: usize,
    /// Launches per timed round, between two device synchronisations.
    pub iters: usize,
    /// Timed rounds; the median of their per-launch times is reported.
    pub rounds: usize,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self { warm: 3, iters: 20, rounds: 5 }
    }
}

/// One measurement of [`bench()`]: a JSON line of `dsa-cli bench-matmul`.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulTiming {
    /// Always `matmul`.
    pub op: &'static str,
    /// The layer ([`MatmulShape::name`]).
    pub shape: String,
    /// Which of its products.
    pub layout: Layout,
    /// The product `out [m, n] = lhs [m, k] · rhs [k, n]` ([`MatmulShape::product`]).
    pub m: usize,
    /// The reduced dim.
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// The element type of the operands and the output.
    pub dtype: String,
    /// `burn` (Burn's own matmul: `Strategy::Auto`, or its autotuner with the `autotune`
    /// feature), or the cubek strategy (`Strategy`'s name without the `matmul_` prefix, as
    /// `cubecl::linear_strategy`'s table takes it).
    pub strategy: String,
    /// `ok`, or why the strategy did not run: its setup error (`Unavailable`,
    /// `InvalidConfig`, ...) or its panic.
    pub status: String,
    /// Median time of one launch in milliseconds (device synchronised around each round).
    pub ms: Option<f64>,
    /// Fastest round's time of one launch in milliseconds.
    pub min_ms: Option<f64>,
    /// TFLOP/s at the median time.
    pub tflops: Option<f64>,
    /// `‖out − burn‖ / ‖burn‖` against Burn's matmul of the same operands (computed in f32;
    /// absent for `burn` itself).
    pub rel_err: Option<f64>,
}

#[cfg(feature = "cubecl-backend")]
pub use cubecl_impl::*;

#[cfg(feature = "cubecl-backend")]
mod cubecl_impl {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::Instant;

    use burn::tensor::backend::Backend;
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{DType, Distribution, ElementConversion, Tensor, TensorPrimitive};
    use burn_cubecl::kernel::matmul::init_matmul_output;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use cubek::matmul::components::tile::TileMatmulKind::Cmma;
    use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
    use cubek::matmul::routines::double_buffering::DoubleBufferingArgs;
    use cubek::matmul::routines::double_unit::DoubleUnitSelectionArgs;
    use cubek::matmul::routines::ordered_double_buffering::OrderedSelectionArgs;
    use cubek::matmul::routines::simple::SimpleArgs;
    use cubek::matmul::routines::simple_unit::SimpleUnitSelectionArgs;
    use cubek::matmul::routines::specialized::SpecializedStrategy;
    use cubek::matmul::routines::{BlueprintStrategy, Routine, TileSizeSelection};
    use cubek::std::InputBinding;

    pub use cubek::matmul::definition::MatmulSetupError;
    pub use cubek::matmul::launch::Strategy;

    use super::{BenchSettings, Layout, MatmulShape, MatmulTiming};

    /// `out = lhs · rhs` by cubek's `strategy`, launched as burn-cubecl's `launch_matmul`
    /// launches it for non-quantized tensors: both inputs read as `lhs`'s dtype, `out` in
    /// its own, half-precision outputs accumulated in f32; any strides, batch dims
    /// broadcast. An error (nothing launched) where the strategy does not apply to the
    /// device, the dtypes, the shapes or the strides.
    ///
    /// # Panics
    ///
    /// On quantized inputs.
    #[allow(clippy::result_large_err)]
    pub fn launch<R: CubeRuntime>(strategy: &Strategy, lhs: CubeTensor<R>, rhs: CubeTensor<R>, out: CubeTensor<R>) -> Result<(), MatmulSetupError> {
        assert!(lhs.qparams.is_none() && rhs.qparams.is_none(), "dsa_burn::matmul::launch: quantized inputs are not supported");
        let client = out.client.clone();
        let dtype = lhs.dtype;
        let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems { lhs: dtype.into(), rhs: dtype.into(), out: out.dtype.into() });
        cubek::matmul::launch::launch_ref(
            strategy,
            &client,
            InputBinding::new(lhs.binding(), dtype.into()),
            InputBinding::new(rhs.binding(), dtype.into()),
            out.binding(),
            &mut dtypes,
        )
    }

    /// `lhs · rhs` by `strategy` into a new tensor of `lhs`'s dtype (see [`launch`]).
    #[allow(clippy::result_large_err)]
    pub fn matmul<R: CubeRuntime>(strategy: &Strategy, lhs: CubeTensor<R>, rhs: CubeTensor<R>) -> Result<CubeTensor<R>, MatmulSetupError> {
        let out = init_matmul_output(&lhs, &rhs, lhs.dtype);
        launch(strategy, lhs, rhs, out.clone())?;
        Ok(out)
    }

    /// The name of `strategy` in [`bench()`]'s lines and `cubecl::linear_strategy`'s table:
    /// its `Display` without the `matmul_` prefix (e.g. `simple_cyclic_cmma`,
    /// `double_cyclic_mma_specialized`, `auto`).
    ///
    /// ```
    /// use dsa_burn::matmul::{strategy_name, Strategy};
    /// assert_eq!(strategy_name(&Strategy::SimpleCyclicCmma(Default::default())), "simple_cyclic_cmma");
    /// ```
    pub fn strategy_name(strategy: &Strategy) -> String {
        let name = strategy.to_string();
        name.strip_prefix("matmul_").unwrap_or(&name).to_string()
    }

    /// cubek's strategies that [`bench()`] times by default: `Strategy::Auto` (Burn's choice
    /// without autotuning) and every tiled tensor-core kernel (cmma: whole-plane fragments;
    /// mma: registers laid out by hand), with the arguments of burn-cubecl's autotuner where
    /// it tunes them (multi-row simple kernels, specialized double buffering, ordered double
    /// buffering of 4 and 8 rows) and inferred blueprints elsewhere.
    pub fn strategies() -> Vec<Strategy> {
        fn simple<A: Routine<(), Strategy = SimpleArgs>>(multi_rows: bool) -> BlueprintStrategy<(), A> {
            BlueprintStrategy::Inferred(SimpleArgs { multi_rows, tile_matmul: Cmma })
        }
        fn double<A: Routine<(), Strategy = DoubleBufferingArgs>>(specialized: bool) -> BlueprintStrategy<(), A> {
            BlueprintStrategy::Inferred(DoubleBufferingArgs { specialized, tile_matmul: Cmma })
        }
        fn specialized<A: Routine<(), Strategy = SpecializedStrategy>>() -> BlueprintStrategy<(), A> {
            BlueprintStrategy::Inferred(SpecializedStrategy::default())
        }
        let ordered = |rows| {
            BlueprintStrategy::Inferred(OrderedSelectionArgs { partition_k: Some(2), row_count: Some(rows), rows_per_plane: Some(2), tile_matmul: Cmma })
        };
        // The `Cmma`/`Mma` variant sets the tile matmul of inferred arguments.
        vec![
            Strategy::Auto,
            Strategy::SimpleCyclicCmma(simple(false)),
            Strategy::SimpleCyclicMma(simple(false)),
            Strategy::SimpleCyclicCmma(simple(true)),
            Strategy::SimpleCyclicMma(simple(true)),
            Strategy::SimpleAsyncCyclicCmma(simple(false)),
            Strategy::SimpleAsyncCyclicMma(simple(false)),
            Strategy::SimpleTmaCmma(simple(false)),
            Strategy::SimpleTmaMma(simple(false)),
            Strategy::SimpleTmaCmma(simple(true)),
            Strategy::SimpleTmaMma(simple(true)),
            Strategy::DoubleCyclicCmma(double(false)),
            Strategy::DoubleCyclicMma(double(false)),
            Strategy::DoubleCyclicCmma(double(true)),
            Strategy::DoubleCyclicMma(double(true)),
            Strategy::DoubleTilewiseCmma(double(false)),
            Strategy::DoubleTilewiseMma(double(false)),
            Strategy::DoubleHybridCmma(double(false)),
            Strategy::DoubleHybridMma(double(false)),
            Strategy::DoubleAsyncCyclicCmma(double(false)),
            Strategy::DoubleAsyncCyclicMma(double(false)),
            Strategy::DoubleTmaCmma(double(false)),
            Strategy::DoubleTmaMma(double(false)),
            Strategy::SpecializedCyclicCmma(specialized()),
            Strategy::SpecializedCyclicMma(specialized()),
            Strategy::SpecializedTmaCmma(specialized()),
            Strategy::SpecializedTmaMma(specialized()),
            Strategy::OrderedDoubleCmma(ordered(4)),
            Strategy::OrderedDoubleMma(ordered(4)),
            Strategy::OrderedDoubleCmma(ordered(8)),
            Strategy::OrderedDoubleMma(ordered(8)),
        ]
    }

    /// The strategies [`bench()`] times only when named: the unit kernels (no tensor cores;
    /// burn-cubecl's autotuner's tile sizes) and the naive one.
    pub fn extra_strategies() -> Vec<Strategy> {
        let simple_unit = |tile_size| Strategy::SimpleUnit(BlueprintStrategy::Inferred(SimpleUnitSelectionArgs { tile_size }));
        let double_unit = |tile_size| Strategy::DoubleUnit(BlueprintStrategy::Inferred(DoubleUnitSelectionArgs { tile_size }));
        vec![
            simple_unit(TileSizeSelection::MaxTileSize),
            simple_unit(TileSizeSelection::MinTileSize),
            double_unit(TileSizeSelection::MaxTileSize),
            double_unit(TileSizeSelection::MinTileSize),
            Strategy::Naive,
        ]
    }

    /// The strategy of [`strategies`] or [`extra_strategies`] named `name` (see
    /// [`strategy_name`]).
    ///
    /// ```
    /// use dsa_burn::matmul::{strategy_by_name, strategy_name};
    /// let s = strategy_by_name("double_cyclic_mma_specialized").unwrap();
    /// assert_eq!(strategy_name(&s), "double_cyclic_mma_specialized");
    /// assert!(strategy_by_name("fastest").is_none());
    /// ```
    pub fn strategy_by_name(name: &str) -> Option<Strategy> {
        strategies().into_iter().chain(extra_strategies()).find(|s| strategy_name(s) == name)
    }

    /// A kernel [`bench()`] times.
    #[derive(Clone)]
    pub enum Candidate {
        /// Burn's own matmul (`float_matmul`): today's projections.
        Burn,
        /// A cubek strategy launched by [`launch`].
        Cubek(Strategy),
    }

    impl Candidate {
        /// Its name in [`MatmulTiming::strategy`].
        pub fn name(&self) -> String {
            match self {
                Candidate::Burn => "burn".into(),
                Candidate::Cubek(s) => strategy_name(s),
            }
        }
    }

    /// Burn backends whose matrix products are cubek's (Burn's CubeCL backends): [`bench()`]
    /// runs on them.
    pub trait CubeMatmul: Backend {
        /// `lhs · rhs` by `strategy` into a new tensor (see [`matmul`]).
        #[allow(clippy::result_large_err)]
        fn matmul_with(strategy: &Strategy, lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> Result<FloatTensor<Self>, MatmulSetupError>;
    }

    impl<R, F, I, BT> CubeMatmul for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        fn matmul_with(strategy: &Strategy, lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> Result<FloatTensor<Self>, MatmulSetupError> {
            matmul(strategy, lhs, rhs)
        }
    }

    /// The operands of `shape`'s product in `layout`, as Burn's autodiff of `nn::Linear`
    /// produces them (batch dim 1 in front, as for `x [1, M, K]`): the forward `x · W` with
    /// `W [K, N]` reshaped to `[1, K, N]`; the input gradient `dY [1, M, N] · Wᵀ`, `Wᵀ` the
    /// transposed view `[N, K]` reshaped to `[1, N, K]`; the weight gradient
    /// `xᵀ [1, K, M] · dY [1, M, N]`, `xᵀ` the transposed view of `x` (Burn then sums the
    /// result over the batch dim). Both transposed: transposed views of `[1, K, M]` and
    /// `[N, K]` tensors.
    fn operands<B: Backend>(shape: &MatmulShape, layout: Layout, device: &B::Device) -> (FloatTensor<B>, FloatTensor<B>) {
        let (m, k, n) = (shape.m, shape.k, shape.n);
        let random = |dims: [usize; 3]| Tensor::<B, 3>::random(dims, Distribution::Normal(0.0, 1.0), device);
        let w = || Tensor::<B, 2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
        let (lhs, rhs) = match layout {
            Layout::NN => (random([1, m, k]), w().reshape([1, k, n])),
            Layout::NT => (random([1, m, n]), w().swap_dims(0, 1).reshape([1, n, k])),
            Layout::TN => (random([1, m, k]).swap_dims(1, 2), random([1, m, n])),
            Layout::TT => (random([1, k, m]).swap_dims(1, 2), Tensor::<B, 2>::random([n, k], Distribution::Normal(0.0, 1.0), device).swap_dims(0, 1).reshape([1, k, n])),
        };
        (lhs.into_primitive().tensor(), rhs.into_primitive().tensor())
    }

    /// A setup error as a one-line status: its kind and cubek's message.
    fn setup_status(error: MatmulSetupError) -> String {
        let kind = match error {
            MatmulSetupError::Unavailable(_) => "Unavailable",
            MatmulSetupError::InvalidConfig(_) => "InvalidConfig",
            MatmulSetupError::Vectorization(_) => "Vectorization",
            MatmulSetupError::Launch(_) => "Launch",
        };
        format!("{kind}: {}", format!("{error:?}").split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The message of a caught panic.
    fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
        let text = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        format!("panicked: {}", text.unwrap_or_else(|| "(no message)".into()))
    }

    /// `‖a − b‖ / ‖b‖` in f32 on the device.
    fn relative_error<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> f64 {
        let a = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(a)).cast(DType::F32);
        let b = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(b)).cast(DType::F32);
        let num = (a - b.clone()).square().sum().into_scalar().elem::<f64>();
        let den = b.square().sum().into_scalar().elem::<f64>();
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }

    /// Times every candidate on every shape in every layout on `device` (see
    /// [`MatmulTiming`]), calling `emit` with each measurement as soon as it is made.
    /// Burn's matmul of the same operands is the reference of the relative errors, so it is
    /// run (untimed unless listed) first. A candidate that does not apply, fails or panics is
    /// reported with its status and no times; the remaining ones still run.
    ///
    /// The time of a launch is the wall-clock time of a round of `settings.iters` launches
    /// between two device synchronisations, divided by `iters`; the median and the minimum
    /// over `settings.rounds` rounds are reported, after `settings.warm` (at least one)
    /// synchronised launches.
    pub fn bench<B: CubeMatmul>(
        shapes: &[MatmulShape],
        layouts: &[Layout],
        candidates: &[Candidate],
        settings: BenchSettings,
        device: &B::Device,
        mut emit: impl FnMut(&MatmulTiming),
    ) -> Vec<MatmulTiming> {
        let mut timings = Vec::new();
        for shape in shapes {
            for &layout in layouts {
                let (lhs, rhs) = operands::<B>(shape, layout, device);
                let dtype = format!("{:?}", burn::tensor::TensorMetadata::dtype(&lhs)).to_lowercase();
                let reference = catch_unwind(AssertUnwindSafe(|| {
                    let out = B::float_matmul(lhs.clone(), rhs.clone());
                    B::sync(device).map(|()| out)
                }));
                let reference = match reference {
                    Ok(Ok(out)) => Some(out),
                    _ => None,
                };
                let [m, k, n] = shape.product(layout);
                for candidate in candidates {
                    let timing = time_candidate::<B>(candidate, &lhs, &rhs, reference.clone(), settings, device);
                    let (status, ms, min_ms, rel_err) = match timing {
                        Ok((median, min, err)) => ("ok".to_string(), Some(median), Some(min), err),
                        Err(status) => (status, None, None, None),
                    };
                    let timing = MatmulTiming {
                        op: "matmul",
                        shape: shape.name.clone(),
                        layout,
                        m,
                        k,
                        n,
                        dtype: dtype.clone(),
                        strategy: candidate.name(),
                        status,
                        ms: ms.map(round6),
                        min_ms: min_ms.map(round6),
                        tflops: ms.map(|ms| round6(shape.flops() / (ms * 1e-3) / 1e12)),
                        rel_err,
                    };
                    emit(&timing);
                    timings.push(timing);
                }
            }
        }
        timings
    }

    fn round6(x: f64) -> f64 {
        (x * 1e6).round() / 1e6
    }

    /// `(median ms, min ms, relative error)` of one candidate, or why it did not run.
    fn time_candidate<B: CubeMatmul>(
        candidate: &Candidate,
        lhs: &FloatTensor<B>,
        rhs: &FloatTensor<B>,
        reference: Option<FloatTensor<B>>,
        settings: BenchSettings,
        device: &B::Device,
    ) -> Result<(f64, f64, Option<f64>), String> {
        #[allow(clippy::result_large_err)]
        let run = || -> Result<FloatTensor<B>, MatmulSetupError> {
            match candidate {
                Candidate::Burn => Ok(B::float_matmul(lhs.clone(), rhs.clone())),
                Candidate::Cubek(strategy) => B::matmul_with(strategy, lhs.clone(), rhs.clone()),
            }
        };
        let sync = || B::sync(device).map_err(|e| format!("device error: {e}"));
        let measured = catch_unwind(AssertUnwindSafe(|| -> Result<(f64, f64, Option<f64>), String> {
            // The first launch: setup errors, compilation, and the result to check.
            let out = run().map_err(setup_status)?;
            sync()?;
            let rel_err = match (candidate, reference) {
                (Candidate::Cubek(_), Some(reference)) => Some(relative_error::<B>(out, reference)),
                _ => None,
            };
            for _ in 1..settings.warm {
                drop(run().map_err(setup_status)?);
                sync()?;
            }
            let iters = settings.iters.max(1);
            let mut rounds = Vec::with_capacity(settings.rounds.max(1));
            for _ in 0..settings.rounds.max(1) {
                sync()?;
                let start = Instant::now();
                for _ in 0..iters {
                    drop(run().map_err(setup_status)?);
                }
                sync()?;
                rounds.push(start.elapsed().as_secs_f64() * 1e3 / iters as f64);
            }
            rounds.sort_by(f64::total_cmp);
            Ok((rounds[rounds.len() / 2], rounds[0], rel_err))
        }));
        measured.unwrap_or_else(|panic| Err(panic_message(panic)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Names tell the strategies apart (the table and `--strategies` find them by name),
        /// and today's default is among them.
        #[test]
        fn strategy_names_are_unique() {
            let names: Vec<String> = strategies().iter().chain(&extra_strategies()).map(strategy_name).collect();
            let unique: std::collections::HashSet<&String> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{names:?}");
            assert!(names.iter().any(|n| n == "simple_cyclic_cmma") && names.iter().any(|n| n == "auto"), "{names:?}");
        }
    }
}
