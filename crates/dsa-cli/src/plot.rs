//! `dsa-cli plot`: the cost curve of one benchmark run as a PNG — forward time against
//! context length, log–log, for dense attention (the PyTorch peer's SDPA) against our DSA
//! attention layer, and sparse MLA alone against the peer's gather + einsum where measured —
//! and the ratio of the peer's time to ours for every op both measured ([`PEERS`]).
//!
//! Input: the JSON lines that `cargo bench --bench dsa` and `../shared/bench/peer_torch.py`
//! print (other lines are skipped), from **one** device call: a point measured twice is an
//! error, so that runs from different calls are never mixed on one picture.
//!
//! ```no_run
//! use std::path::PathBuf;
//! let files = [PathBuf::from("runs/bench/ours.jsonl"), PathBuf::from("runs/bench/peer.jsonl")];
//! let plotted = dsa_cli::plot::plot_cost(&files, "docs/cost.png".as_ref(), None).unwrap();
//! println!("{} series on {}", plotted.series, plotted.device);
//! for r in &plotted.ratios {
//!     println!("{} at L = {}: {:.2}x", r.what, r.l, r.ratio());
//! }
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// The curves: benchmark op name, legend, colour and whether the line is dashed (the peer's).
const SERIES: [(&str, &str, RGBColor, bool); 4] = [
    ("dense_sdpa_prefill", "dense attention: PyTorch scaled_dot_product_attention", RGBColor(200, 60, 40), true),
    ("dsa_attention_fwd", "DSA attention layer: indexer + top-k + sparse MLA (ours)", RGBColor(30, 90, 200), false),
    ("sparse_mla_prefill_gather", "sparse MLA only: PyTorch gather + einsum", RGBColor(120, 120, 120), true),
    ("dsa_sparse_mla_fwd", "sparse MLA only (ours)", RGBColor(40, 150, 80), false),
];

/// Our op, the PyTorch peer's op for the same work (`peer_torch.py`), and what they compute.
pub const PEERS: [(&str, &str, &str); 4] = [
    ("dsa_attention_fwd", "dense_sdpa_prefill", "DSA attention layer vs dense SDPA"),
    ("dsa_sparse_mla_fwd", "sparse_mla_prefill_gather", "sparse MLA prefill forward"),
    ("dsa_indexer_topk", "indexer_topk_torch", "indexer + top-k"),
    ("dsa_sparse_mla_decode_b64", "sparse_mla_decode_gather_b64", "sparse MLA decode, batch 64"),
];

/// The font of every label (DejaVu Sans; its licence is beside it).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// What [`plot_cost`] drew.
#[derive(Debug)]
pub struct Plotted {
    /// Number of curves with at least one point.
    pub series: usize,
    /// The device named in the title.
    pub device: String,
    /// Peer time over ours for each op of [`PEERS`] at each length both measured.
    pub ratios: Vec<Ratio>,
}

/// One op at one context length, timed by us and by the PyTorch peer in the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// What both compute (the third field of [`PEERS`]).
    pub what: &'static str,
    /// Context length.
    pub l: f64,
    /// Our time in ms.
    pub ours_ms: f64,
    /// The peer's time in ms.
    pub peer_ms: f64,
}

impl Ratio {
    /// The peer's time over ours: above 1 where we are faster.
    pub fn ratio(&self) -> f64 {
        self.peer_ms / self.ours_ms
    }
}

/// One measured point: time in ms at context length `l`, and where it came from.
struct Point {
    l: f64,
    ms: f64,
    from: String,
}

/// Reads the benchmark lines of `files`, draws the cost curve into the PNG `out` and returns
/// the peer-over-ours ratios. The title names `device`, or else the `device` field of the
/// lines (which must agree).
pub fn plot_cost(files: &[PathBuf], out: &Path, device: Option<String>) -> Result<Plotted, Box<dyn Error>> {
    let wanted: Vec<&'static str> = SERIES.iter().map(|s| s.0).chain(PEERS.iter().flat_map(|p| [p.0, p.1])).collect();
    let mut points: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
    let mut devices = Vec::<String>::new();
    let mut dtype = None::<String>;
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with('{') {
                continue;
            }
            let at = format!("{}:{}", file.display(), n + 1);
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{at}: not a JSON object: {e}"))?;
            if let Some(d) = v.get("device").and_then(|d| d.as_str()) {
                if !devices.iter().any(|x| x == d) {
                    devices.push(d.to_string());
                }
            }
            let Some(op) = v.get("op").and_then(|o| o.as_str()) else { continue };
            let Some(&name) = wanted.iter().find(|w| **w == op) else { continue };
            if let Some(d) = v.get("dtype").and_then(|d| d.as_str()) {
                dtype.get_or_insert_with(|| d.to_string());
            }
            let field = |key: &str| {
                v.get(key).and_then(|x| x.as_f64()).ok_or_else(|| format!("{at}: `{op}` has no numeric `{key}`"))
            };
            let (l, ms) = (field("L")?, field("ms")?);
            if !(l > 0.0 && ms > 0.0) {
                return Err(format!("{at}: `{op}` needs L > 0 and ms > 0 (log axes), got L = {l}, ms = {ms}").into());
            }
            let series = points.entry(name).or_default();
            if let Some(p) = series.iter().find(|p| p.l == l) {
                return Err(format!(
                    "`{op}` at L = {l} is measured twice ({} and {at}): plot the results of one device call",
                    p.from
                )
                .into());
            }
            series.push(Point { l, ms, from: at });
        }
    }
    let device = match device {
        Some(d) => d,
        None => match devices.as_slice() {
            [one] => one.clone(),
            [] => return Err("no `device` field in the benchmark lines: name the device with --device".into()),
            many => return Err(format!("the lines name several devices ({}): plot one run", many.join(", ")).into()),
        },
    };
    let ratios = PEERS
        .iter()
        .flat_map(|&(ours, peer, what)| {
            let (ours, peer) = (points.get(ours).map_or(&[][..], |v| v), points.get(peer).map_or(&[][..], |v| v));
            let mut pairs: Vec<Ratio> = ours
                .iter()
                .filter_map(|o| peer.iter().find(|p| p.l == o.l).map(|p| Ratio { what, l: o.l, ours_ms: o.ms, peer_ms: p.ms }))
                .collect();
            pairs.sort_by(|a, b| a.l.total_cmp(&b.l));
            pairs
        })
        .collect();
    points.retain(|op, _| SERIES.iter().any(|s| s.0 == *op));
    let all: Vec<&Point> = points.values().flatten().collect();
    if all.is_empty() {
        let ops: Vec<&str> = SERIES.iter().map(|s| s.0).collect();
        return Err(format!("no benchmark lines with op in {ops:?} in {files:?}").into());
    }
    let (l0, l1) = bounds(all.iter().map(|p| p.l));
    let (t0, t1) = bounds(all.iter().map(|p| p.ms));
    draw(out, &points, (l0 / 1.3, l1 * 1.3), (t0 / 2.0, t1 * 2.0), &device, dtype.as_deref())?;
    Ok(Plotted { series: points.len(), device, ratios })
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The powers of two within `lo..=hi`: context lengths' natural ticks.
fn powers_of_two((lo, hi): (f64, f64)) -> Vec<f64> {
    (0..64).map(|e| 2f64.powi(e)).filter(|v| (lo..=hi).contains(v)).collect()
}

fn draw(
    out: &Path,
    points: &BTreeMap<&str, Vec<Point>>,
    x: (f64, f64),
    y: (f64, f64),
    device: &str,
    dtype: Option<&str>,
) -> Result<(), Box<dyn Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font could not be loaded")?;
    let root = BitMapBackend::new(out, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("Attention forward time vs context length: {device}{}", dtype.map(|d| format!(", {d}")).unwrap_or_default());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x.0..x.1).log_scale().with_key_points(powers_of_two(x)), (y.0..y.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("context length L (tokens)")
        .y_desc("time (ms)")
        .x_label_formatter(&|l| if *l >= 1024.0 { format!("{}K", *l / 1024.0) } else { format!("{l:.0}") })
        .y_label_formatter(&|t| format!("{t}"))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (op, legend, color, dashed) in SERIES {
        let Some(series) = points.get(op) else { continue };
        let mut pts: Vec<(f64, f64)> = series.iter().map(|p| (p.l, p.ms)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = ShapeStyle::from(color).stroke_width(3);
        if dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 10, 6, style))?
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))?
        }
        .label(legend)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 5, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present().map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Width and height from a PNG's IHDR chunk (after the 8-byte signature).
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        (be(16), be(20))
    }

    #[test]
    fn draws_the_curves_of_one_run_and_rejects_mixed_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ours = write(
            dir.path(),
            "ours.jsonl",
            "compiling...\n{\"op\": \"dsa_attention_fwd\", \"L\": 4096, \"ms\": 60.0, \"dtype\": \"bf16\"}\n\
             {\"op\": \"dsa_attention_fwd\", \"L\": 65536, \"ms\": 3600.0}\n{\"op\": \"other\", \"L\": 1, \"ms\": 1}\n",
        );
        let peer = write(
            dir.path(),
            "peer.jsonl",
            "{\"op\": \"dense_sdpa_prefill\", \"L\": 4096, \"ms\": 1.3, \"device\": \"GPU X\"}\n\
             {\"op\": \"dense_sdpa_prefill\", \"L\": 65536, \"ms\": 340.0, \"device\": \"GPU X\"}\n",
        );
        let out = dir.path().join("cost.png");
        let plotted = plot_cost(&[ours.clone(), peer.clone()], &out, None).unwrap();
        assert_eq!((plotted.series, plotted.device.as_str()), (2, "GPU X"));
        assert_eq!(png_size(&std::fs::read(&out).unwrap()), (1000, 640));
        // Ratios where both measured the same op at the same length, peer over ours.
        let layer = "DSA attention layer vs dense SDPA";
        let want = [(4096.0, 60.0, 1.3), (65536.0, 3600.0, 340.0)].map(|(l, ours_ms, peer_ms)| Ratio { what: layer, l, ours_ms, peer_ms });
        assert_eq!(plotted.ratios, want);
        assert!((plotted.ratios[1].ratio() - 340.0 / 3600.0).abs() < 1e-12);
        // Ops that are not drawn still give ratios; a length only one side measured gives none.
        let idx = write(
            dir.path(),
            "idx.jsonl",
            "{\"op\": \"dsa_indexer_topk\", \"L\": 4096, \"ms\": 2.0}\n{\"op\": \"dsa_indexer_topk\", \"L\": 8192, \"ms\": 5.0}\n\
             {\"op\": \"indexer_topk_torch\", \"L\": 4096, \"ms\": 30.0, \"device\": \"GPU X\"}\n",
        );
        let plotted = plot_cost(&[ours.clone(), peer.clone(), idx], &out, None).unwrap();
        assert_eq!(plotted.series, 2);
        let topk: Vec<f64> = plotted.ratios.iter().filter(|r| r.what == "indexer + top-k").map(Ratio::ratio).collect();
        assert_eq!(topk, [15.0]);

        // The same point from two files (two runs): refused, naming both places.
        let again = write(dir.path(), "again.jsonl", "{\"op\": \"dsa_attention_fwd\", \"L\": 4096, \"ms\": 61.0}\n");
        let err = plot_cost(&[ours.clone(), peer.clone(), again], &out, None).unwrap_err().to_string();
        assert!(err.contains("measured twice") && err.contains("ours.jsonl:2") && err.contains("again.jsonl:1"), "{err}");
        // Two devices: refused unless one is named.
        let other = write(dir.path(), "other.jsonl", "{\"op\": \"dense_sdpa_prefill\", \"L\": 1024, \"ms\": 0.2, \"device\": \"GPU Y\"}\n");
        let err = plot_cost(&[peer.clone(), other.clone()], &out, None).unwrap_err().to_string();
        assert!(err.contains("several devices"), "{err}");
        assert_eq!(plot_cost(&[peer.clone(), other], &out, Some("GPU Z".into())).unwrap().device, "GPU Z");
        // No device anywhere: it must be named.
        let err = plot_cost(&[ours], &out, None).unwrap_err().to_string();
        assert!(err.contains("--device"), "{err}");
        // A broken line names its file and line.
        let bad = write(dir.path(), "bad.jsonl", "{\"op\": \"dense_sdpa_prefill\", \"L\": 4096, \"ms\": }\n");
        let err = plot_cost(&[peer, bad], &out, None).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:1"), "{err}");
    }
}
