//! Checks of a run directory's weights (Burn records written by
//! [`RunRecorder`](crate::checkpoint::RunRecorder)) against the model's configuration,
//! before they are loaded: every tensor's name and shape, then (after loading) that every
//! value is finite. Burn's own `load_record` checks neither: a record of another shape
//! loads into a wrong model, one with more or fewer layers panics.
//!
//! The errors are [`LoadError`]s, as those of HuggingFace checkpoints
//! ([`dsa_model::hf::check_tensors`]): the first tensor of another shape with both shapes,
//! every missing and unexpected tensor, layers beyond the config's.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::Recorder;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use dsa_model::LoadError;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::checkpoint::{verify_file, RunError, RunFormat};

/// Float tensors by their module path (`layers.0.self_attn.wq_a.weight`) with their shapes,
/// in the module's order.
pub type TensorShapes = Vec<(String, Vec<usize>)>;

/// The float parameters of `module` with their shapes (without initialising lazy ones).
pub fn parameter_shapes<B: Backend, M: Module<B>>(module: &M) -> TensorShapes {
    let mut visitor = ParamVisitor { path: Vec::new(), found: Vec::new(), check_finite: false, bad: None };
    module.visit(&mut visitor);
    visitor.found
}

/// The float tensors of record file `file` (a `.mpk` written by
/// [`RunRecorder`](crate::checkpoint::RunRecorder), verified against its checksum first)
/// with their shapes, without building any tensor.
pub fn record_shapes<B: Backend>(file: &Path) -> Result<TensorShapes, RunError> {
    Ok(read_record::<B>(file)?.tensors)
}

/// The float tensors of a record file and the ids of its parameters.
struct RecordContents {
    /// Every float tensor with its shape.
    tensors: TensorShapes,
    /// The id of each parameter (Burn's `ParamId`), by the parameter's name.
    ids: HashMap<String, String>,
}

/// Reads record file `file` as [`record_shapes`] does, with the parameters' ids.
fn read_record<B: Backend>(file: &Path) -> Result<RecordContents, RunError> {
    verify_file(file)?;
    let record: RecordFile = <RunFormat as Recorder<B>>::load_item(&RunFormat::default(), &mut file.with_extension(""))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut contents = RecordContents { tensors: Vec::new(), ids: HashMap::new() };
    record.item.flatten(&mut Vec::new(), &mut contents);
    Ok(contents)
}

/// Checks the tensors `found` in record file `file` against the parameters `expected` of a
/// model of `num_hidden_layers` layers: a layer beyond them is a
/// [`LoadError::ExtraLayers`] (a run directory holds no MTP layers), missing and
/// unexpected tensors a [`LoadError::NameMismatch`], and the first tensor of another shape
/// a [`LoadError::ShapeMismatch`].
pub fn check_shapes(file: &Path, found: &[(String, Vec<usize>)], expected: &[(String, Vec<usize>)], num_hidden_layers: usize) -> Result<(), LoadError> {
    if let Some((highest, tensor)) = found.iter().filter_map(|(name, _)| Some((layer_index(name)?, name))).filter(|(l, _)| *l >= num_hidden_layers).max_by_key(|(l, _)| *l) {
        return Err(LoadError::ExtraLayers { highest, tensor: tensor.clone(), file: file.to_path_buf(), num_hidden_layers, mtp_layers: 0 });
    }
    let found_shapes: HashMap<&str, &Vec<usize>> = found.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let expected_names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<String> = expected.iter().filter(|(n, _)| !found_shapes.contains_key(n.as_str())).map(|(n, _)| n.clone()).collect();
    let unexpected: Vec<String> = found.iter().filter(|(n, _)| !expected_names.contains(n.as_str())).map(|(n, _)| n.clone()).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(LoadError::NameMismatch { missing, unexpected, location: file.to_path_buf() });
    }
    for (name, shape) in expected {
        if found_shapes[name.as_str()] != shape {
            return Err(LoadError::ShapeMismatch { name: name.clone(), expected: shape.clone(), found: found_shapes[name.as_str()].clone(), file: file.to_path_buf() });
        }
    }
    Ok(())
}

/// Checks a learner checkpoint before Burn's learner loads it (Burn checks neither: a record
/// of other shapes loads into a wrong model or panics, another run's optimizer state
/// replaces the weights by its master copy): the model record `model_file` against
/// `module` (a model initialised from its configuration, `num_hidden_layers` layers) with
/// [`check_shapes`], then the optimizer record `optim_file`, which must be this model's
/// state of [`MasterWeights`](dsa_burn::MasterWeights) around
/// [`FusedAdamW`](dsa_burn::FusedAdamW): its master copy (`1.…`) has the parameters of
/// `module` ([`check_shapes`]) with the ids of `model_file`'s, and each of its moments
/// (`0.<id>.…`) the id and shape of one of them. An error names the file and the first
/// tensor that differs.
pub fn check_checkpoint<B: Backend, M: Module<B>>(model_file: &Path, optim_file: &Path, module: &M, num_hidden_layers: usize) -> Result<(), RunError> {
    let expected = parameter_shapes(module);
    let model = read_record::<B>(model_file)?;
    check_shapes(model_file, &model.tensors, &expected, num_hidden_layers)?;
    let optim = read_record::<B>(optim_file)?;
    let foreign = |why: String| -> RunError { format!("{} is not the optimizer state of {}: {why}", optim_file.display(), model_file.display()).into() };
    let (mut masters, mut moments) = (Vec::new(), Vec::new());
    for (name, shape) in optim.tensors {
        match name.split_once('.') {
            Some(("1", param)) => masters.push((param.to_string(), shape)),
            Some(("0", moment)) => moments.push((moment.split('.').next().unwrap_or_default().to_string(), name, shape)),
            _ => return Err(foreign(format!("it holds tensor `{name}`, neither a moment nor a master weight"))),
        }
    }
    if masters.is_empty() {
        return Err(foreign("it holds no master weights".into()));
    }
    check_shapes(optim_file, &masters, &expected, num_hidden_layers)?;
    for (param, _) in &masters {
        let (found, wanted) = (optim.ids.get(&format!("1.{param}")), model.ids.get(param));
        if found != wanted {
            return Err(foreign(format!("its master copy of `{param}` is parameter {}, the model's is {} (another run's state)", found.map_or("?", |s| s), wanted.map_or("?", |s| s))));
        }
    }
    let params: HashMap<&str, (&str, &Vec<usize>)> = model.tensors.iter().filter_map(|(name, shape)| Some((model.ids.get(name)?.as_str(), (name.as_str(), shape)))).collect();
    for (id, moment, shape) in &moments {
        match params.get(id.as_str()) {
            None => return Err(foreign(format!("its moment `{moment}` is of parameter {id}, which the model does not have (another run's state)"))),
            Some((param, expected)) if *expected != shape => {
                return Err(foreign(format!("its moment `{moment}` of `{param}` has shape {shape:?}, the parameter {expected:?}")))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that every float parameter of `module` (loaded from `file`) is finite: the first
/// that is not is a [`LoadError::BadValue`] naming it, its first bad value and its index.
pub fn check_finite<B: Backend, M: Module<B>>(module: &M, file: &Path) -> Result<(), LoadError> {
    let mut visitor = ParamVisitor { path: Vec::new(), found: Vec::new(), check_finite: true, bad: None };
    module.visit(&mut visitor);
    match visitor.bad {
        None => Ok(()),
        Some((name, value, index)) => Err(LoadError::BadValue { name, file: file.to_path_buf(), value, index, requirement: "weights must be finite" }),
    }
}

/// The layer of a tensor path (`layers.3.…` or `model.layers.3.…`).
fn layer_index(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    parts.by_ref().find(|p| *p == "layers")?;
    parts.next()?.parse().ok()
}

/// Collects the shapes of float parameters and, when asked, the first non-finite value.
struct ParamVisitor {
    path: Vec<String>,
    found: TensorShapes,
    check_finite: bool,
    /// The first parameter holding a non-finite value: its name, the value, its index.
    bad: Option<(String, f32, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for ParamVisitor {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.join(".");
        if self.check_finite {
            let all_finite = || param.val().is_finite().all().into_data().to_vec::<bool>().is_ok_and(|v| v.iter().all(|&b| b));
            if self.bad.is_none() && !all_finite() {
                let data = param.val().into_data().convert::<f32>();
                let values = data.to_vec::<f32>().unwrap_or_default();
                if let Some(flat) = values.iter().position(|v| !v.is_finite()) {
                    self.bad = Some((name, values[flat], unflatten(flat, data.shape.as_slice())));
                }
            }
        } else {
            self.found.push((name, param.lazy_shape().to_vec()));
        }
    }
}

/// The row-major multi-index of flat index `flat` in `shape`.
fn unflatten(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (i, &dim) in index.iter_mut().zip(shape).rev() {
        *i = rest % dim.max(1);
        rest /= dim.max(1);
    }
    index
}

/// A record file as far as [`record_shapes`] reads it: Burn's `BurnRecord` (its metadata
/// ignored) around the module's record item.
#[derive(serde::Deserialize)]
struct RecordFile {
    item: Node,
}

/// A record item's structure: maps (modules, Burn's parameter wrappers, enum variants),
/// sequences (`Vec` modules), tensors (their shape only), strings (parameter ids) and other
/// values.
enum Node {
    Tensor(Vec<usize>),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Int(u64),
    Str(String),
    Other,
}

impl Node {
    /// Appends every tensor under `self` to `found`, named by its module path: map keys
    /// and sequence indices joined by dots, leaving out the `param` level of Burn's
    /// parameter records (whose ids go to `found.ids`).
    fn flatten(&self, path: &mut Vec<String>, found: &mut RecordContents) {
        match self {
            Node::Tensor(shape) => found.tensors.push((path.join("."), shape.clone())),
            Node::Map(entries) => {
                for (key, node) in entries {
                    let id = entries.iter().find_map(|(k, v)| match (k.as_str(), v) {
                        ("id", Node::Str(id)) => Some(id),
                        _ => None,
                    });
                    let param_id = id.filter(|_| key == "param");
                    let is_param = param_id.is_some();
                    match param_id {
                        Some(id) => {
                            found.ids.insert(path.join("."), id.clone());
                        }
                        None => path.push(key.clone()),
                    }
                    node.flatten(path, found);
                    if !is_param {
                        path.pop();
                    }
                }
            }
            Node::Seq(items) => {
                for (i, node) in items.iter().enumerate() {
                    path.push(i.to_string());
                    node.flatten(path, found);
                    path.pop();
                }
            }
            Node::Int(_) | Node::Str(_) | Node::Other => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Burn record")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(u64::try_from(v).map_or(Node::Other, Node::Int))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<Key, Node>()? {
            entries.push((key.0, value));
        }
        // Burn's TensorData: its bytes, shape and dtype.
        let has = |k: &str| entries.iter().any(|(key, _)| key == k);
        if has("bytes") && has("dtype") {
            if let Some((_, Node::Seq(dims))) = entries.iter().find(|(k, _)| k == "shape") {
                let shape: Option<Vec<usize>> = dims.iter().map(|d| match d {
                    Node::Int(n) => usize::try_from(*n).ok(),
                    _ => None,
                }).collect();
                if let Some(shape) = shape {
                    return Ok(Node::Tensor(shape));
                }
            }
        }
        Ok(Node::Map(entries))
    }
}

/// A map key: a string or an integer, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

