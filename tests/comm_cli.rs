//! `fwdbench comm bench` on the CPU: its flags and size lists, the nccl-tests arithmetic,
//! the merge of rank timings into a table that `CommTable::load` reads back, the public
//! comparison, and the clear error on a machine without a GPU or NCCL.

use std::process::Command;

use fwdbench::bench::comm::{
    algbw_gbs, human_bytes, message_count, parse_bytes, parse_dtype, parse_modes, parse_ops, parse_size_list,
    require_comm_libraries, series_lines, size_list, slowest_rank_rows, CommBenchError, CommBenchOptions, RankTiming,
};
use fwdbench::dist::comm_model::{busbw_gbs, CommModel, CommOp, CommTable, Mode};
use fwdbench::plan::DType;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn fwdbench(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fwdbench")).args(args).env_remove("FWDBENCH_RANK").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn driver_present() -> bool {
    // SAFETY: probing only dlopens the driver.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[test]
fn byte_sizes_read_like_nccl_tests() {
    for (text, bytes) in [("1024", 1024), ("1K", KIB), ("4k", 4 * KIB), ("64M", 64 * MIB), ("1G", GIB)] {
        assert_eq!(parse_bytes("--min-bytes", text), Ok(bytes), "{text}");
    }
    assert_eq!(parse_bytes("--min-bytes", " 16KB "), Ok(16 * KIB));
    assert_eq!(parse_bytes("--min-bytes", "2MiB"), Ok(2 * MIB));
    for bad in ["", "K", "1T", "1.5M", "-1", "0", "99999999999G"] {
        let e = parse_bytes("--max-bytes", bad).unwrap_err();
        assert_eq!(e, CommBenchError::Size { flag: "--max-bytes", value: bad.into() }, "{bad}");
    }
    assert!(parse_bytes("--max-bytes", "1T")
        .unwrap_err()
        .to_string()
        .starts_with("--max-bytes `1T` is not a byte size"));
}

#[test]
fn size_lists_follow_min_max_and_factor() {
    let default = size_list(KIB, GIB, 4).unwrap();
    assert_eq!(default.len(), 11);
    assert_eq!((default[0], default[10]), (KIB, GIB));
    assert!(default.windows(2).all(|w| w[1] == 4 * w[0]));
    // The max is a bound, not a member.
    assert_eq!(size_list(3, 100, 3).unwrap(), vec![3, 9, 27, 81]);
    assert_eq!(size_list(8, 8, 2).unwrap(), vec![8]);
    // Growth stops before it overflows.
    assert_eq!(size_list(u64::MAX / 2 + 1, u64::MAX, 2).unwrap(), vec![u64::MAX / 2 + 1]);
    assert_eq!(size_list(KIB, GIB, 1), Err(CommBenchError::Factor(1)));
    assert_eq!(size_list(MIB, KIB, 2), Err(CommBenchError::Range { min: MIB, max: KIB }));
    assert_eq!(parse_size_list("1M,1K,1024,512M").unwrap(), vec![KIB, MIB, 512 * MIB]);
    assert!(parse_size_list("1K,,2K").is_err());
}

#[test]
fn op_mode_and_dtype_lists() {
    assert_eq!(parse_ops("all").unwrap(), CommOp::ALL.to_vec());
    assert_eq!(parse_ops("all_to_all, all_reduce").unwrap(), vec![CommOp::AllToAll, CommOp::AllReduce]);
    assert_eq!(parse_ops("reduce_scatter,all").unwrap()[..2], [CommOp::ReduceScatter, CommOp::AllReduce]);
    assert_eq!(parse_ops("all_reduce,all").unwrap().len(), 4);
    let e = parse_ops("all_reduce,broadcast").unwrap_err().to_string();
    assert_eq!(e, "--ops `broadcast` is not one of all_reduce, all_gather, reduce_scatter, all_to_all or all");
    assert!(matches!(parse_ops(" , "), Err(CommBenchError::Empty { flag: "--ops", .. })));
    assert_eq!(parse_modes("eager,graph").unwrap(), vec![Mode::Eager, Mode::Graph]);
    assert_eq!(parse_modes("graph").unwrap(), vec![Mode::Graph]);
    assert!(parse_modes("cuda_graph")
        .unwrap_err()
        .to_string()
        .starts_with("--mode `cuda_graph` is not one of eager, graph"));
    assert_eq!(parse_dtype("bf16"), Ok(DType::BF16));
    assert_eq!(parse_dtype("f32"), Ok(DType::F32));
    assert!(parse_dtype("fp8").is_err());
    let opts = |iters, graph_ops| CommBenchOptions {
        ops: vec![CommOp::AllReduce],
        sizes: vec![KIB],
        modes: vec![Mode::Eager],
        warmup: 0,
        iters,
        graph_ops,
        dtype: DType::BF16,
    };
    assert!(opts(1, 1).validate().is_ok());
    assert_eq!(opts(0, 1).validate().unwrap_err().to_string(), "--iters 0: it must be at least 1");
    assert!(opts(3, 0).validate().is_err());
}

#[test]
fn message_sizes_round_to_whole_elements_per_rank() {
    // 1 KiB of bf16 over 8 ranks: the all-reduce buffer, or 64 elements from each rank.
    assert_eq!(message_count(CommOp::AllReduce, KIB, DType::BF16, 8), Some((512, KIB)));
    assert_eq!(message_count(CommOp::AllGather, KIB, DType::BF16, 8), Some((64, KIB)));
    assert_eq!(message_count(CommOp::ReduceScatter, KIB, DType::F32, 8), Some((32, KIB)));
    // 1000 bytes over 3 ranks: 166 bf16 per peer, a 996-byte message.
    assert_eq!(message_count(CommOp::AllToAll, 1000, DType::BF16, 3), Some((166, 996)));
    assert_eq!(message_count(CommOp::AllGather, 8, DType::BF16, 8), None);
    assert_eq!(message_count(CommOp::AllReduce, 8, DType::BF16, 8), Some((4, 8)));
    assert_eq!(message_count(CommOp::AllToAll, GIB, DType::BF16, 1), Some((GIB as usize / 2, GIB)));
}

#[test]
fn bandwidths_match_nccl_tests_by_hand() {
    // nccl-tests: algbw = size / time; busbw = algbw * 2(n-1)/n (all-reduce) or (n-1)/n.
    // all_reduce x8, 512 MiB in 2040 us: 536870912 / 2040e-6 = 263.17 GB/s; * 1.75 = 460.55.
    assert!((algbw_gbs(512 * MIB, 2040.0) - 263.17).abs() < 0.01);
    assert!((busbw_gbs(CommOp::AllReduce, 8, 512 * MIB, 2040.0) - 460.55).abs() < 0.01);
    // all_gather x8, 64 MiB in 206 us: 325.77 GB/s algbw, * 0.875 = 285.05.
    assert!((busbw_gbs(CommOp::AllGather, 8, 64 * MIB, 206.0) - 285.05).abs() < 0.01);
    // reduce_scatter x8, 16 MiB in 69.5 us: 241.40 * 0.875 = 211.23.
    assert!((busbw_gbs(CommOp::ReduceScatter, 8, 16 * MIB, 69.5) - 211.23).abs() < 0.01);
    // all_reduce x2: the factor is 1, so busbw = algbw = 315.07.
    assert!((busbw_gbs(CommOp::AllReduce, 2, 512 * MIB, 1704.0) - 315.07).abs() < 0.01);
    assert_eq!(busbw_gbs(CommOp::AllToAll, 1, MIB, 3.0), 0.0);
}

fn timing(bytes: u64, us_median: f64) -> RankTiming {
    RankTiming { bytes, us_median, us_p10: us_median - 0.5, us_p90: us_median + 1.25 }
}

#[test]
fn the_table_keeps_the_slowest_rank_and_reads_back() {
    let per_rank = vec![
        vec![timing(KIB, 10.0), timing(MIB, 30.0)],
        vec![timing(KIB, 12.5), timing(MIB, 29.0)],
        vec![timing(KIB, 11.0), timing(MIB, 28.5)],
    ];
    let rows = slowest_rank_rows(CommOp::AllGather, Mode::Graph, &per_rank).unwrap();
    assert_eq!(rows.iter().map(|r| r.slowest_rank).collect::<Vec<_>>(), [1, 0]);
    assert_eq!(rows.iter().map(|r| r.spread_us).collect::<Vec<_>>(), [2.5, 1.5]);
    let p = &rows[0].point;
    assert_eq!((p.ranks, p.bytes, p.mode, p.us_median, p.us_p10, p.us_p90), (3, KIB, Mode::Graph, 12.5, 12.0, 13.75));
    assert_eq!(p.busbw_gbs, busbw_gbs(CommOp::AllGather, 3, KIB, 12.5));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comm_3xh200.csv");
    let table = CommTable { origin: "test".into(), points: rows.iter().map(|r| r.point.clone()).collect() };
    table.save(&path).unwrap();
    let back = CommTable::load(&path).unwrap();
    assert_eq!(back.points.len(), 2);
    for (a, b) in back.points.iter().zip(&table.points) {
        assert_eq!(
            (a.op, a.ranks, a.bytes, a.mode, a.us_median, a.us_p10, a.us_p90),
            (b.op, b.ranks, b.bytes, b.mode, b.us_median, b.us_p10, b.us_p90)
        );
        assert!((a.busbw_gbs - b.busbw_gbs).abs() < 5e-4);
    }

    let short = vec![vec![timing(KIB, 1.0)], vec![timing(2 * KIB, 1.0)]];
    let e = slowest_rank_rows(CommOp::AllReduce, Mode::Eager, &short).unwrap_err().to_string();
    assert!(e.starts_with("rank 1 measured 2K message sizes of all_reduce where rank 0 measured 1K"), "{e}");
}

#[test]
fn a_world_of_one_writes_a_table_that_loads_and_projects_nothing() {
    // A one-rank all-reduce can take no measurable time; the CSV still holds positive times.
    let t = RankTiming::of(MIB, &[0.0, 0.0, 0.0]);
    assert!(t.us_median > 0.0 && t.us_p10 > 0.0);
    assert_eq!(RankTiming::of(KIB, &[3.0, 1.0, 2.0]).us_median, 2.0);
    let rows = slowest_rank_rows(CommOp::AllReduce, Mode::Graph, &[vec![t]]).unwrap();
    let table = CommTable { origin: "x1".into(), points: vec![rows[0].point.clone()] };
    let back = CommTable::parse(&table.to_csv(), "x1.csv").unwrap();
    assert_eq!(back.points[0].busbw_gbs, 0.0);
    // Its rows do not become a series that other world sizes scale from (ring factor 0).
    let model = CommModel::builtin().with_measured(&back);
    let p = model.predict(CommOp::AllReduce, 8, MIB, Mode::Graph, false);
    assert_eq!(p.us, 26.1, "{}", p.source);
}

#[test]
fn the_terminal_table_puts_public_figures_beside_measured_ones() {
    let per_rank: Vec<Vec<RankTiming>> =
        (0..8).map(|_| vec![timing(MIB, 52.2), timing(256 * KIB, 30.0), timing(GIB, 5000.0)]).collect();
    let rows = slowest_rank_rows(CommOp::AllReduce, Mode::Eager, &per_rank).unwrap();
    let lines = series_lines(&rows, DType::BF16, 10);
    assert!(lines[0].starts_with("all_reduce over 8 rank(s), eager"), "{}", lines[0]);
    // 1 MiB is a public point (26.1 us): twice as slow reads 2.00.
    assert!(
        lines[2].trim_start().starts_with("1M") && lines[2].contains(" 26.1 ") && lines[2].ends_with(" 2.00"),
        "{}",
        lines[2]
    );
    // 256 KiB lies between public points: interpolated, marked ~.
    assert!(lines[3].contains("~"), "{}", lines[3]);
    // 1 GiB is beyond the public sizes: no figure.
    assert!(lines[4].trim_end().ends_with('-'), "{}", lines[4]);
    // No public series has 4 ranks.
    let four: Vec<Vec<RankTiming>> = (0..4).map(|_| vec![timing(MIB, 20.0)]).collect();
    let line = &series_lines(&slowest_rank_rows(CommOp::AllReduce, Mode::Graph, &four).unwrap(), DType::BF16, 10)[2];
    assert!(line.trim_end().ends_with('-') && !line.contains('~'), "{line}");
    assert_eq!(
        (human_bytes(1536), human_bytes(512 * MIB), human_bytes(1000)),
        ("1536".into(), "512M".into(), "1000".into())
    );
}

#[test]
fn bad_flags_are_one_sentence_before_any_device() {
    let (code, err) = fwdbench(&["comm", "bench", "--ops", "all_reduce,broadcast"]);
    assert_eq!(code, 1);
    assert!(err.contains("--ops `broadcast` is not one of"), "{err}");
    let (code, err) = fwdbench(&["comm", "bench", "--min-bytes", "1M", "--max-bytes", "1K"]);
    assert_eq!(code, 1);
    assert!(err.contains("--min-bytes 1M is larger than --max-bytes 1K; swap them"), "{err}");
    let (code, err) = fwdbench(&["comm", "bench", "--sizes", "1K,1M", "--factor", "2"]);
    assert_eq!(code, 2, "clap refuses --sizes with --factor: {err}");
    let (code, err) = fwdbench(&["comm", "bench", "--iters", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--iters 0"), "{err}");
}

#[test]
fn no_gpu_or_nccl_is_a_clear_error() {
    if driver_present() {
        return;
    }
    let e = require_comm_libraries().unwrap_err().to_string();
    assert!(e.contains("no CUDA driver (libcuda.so)"), "{e}");
    let (code, err) = fwdbench(&["comm", "bench", "--max-bytes", "4K"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: fwdbench comm bench times NCCL collectives on NVIDIA GPUs"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
