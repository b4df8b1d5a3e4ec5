//! The communication model: the built-in public figures, interpolation and extrapolation,
//! other world sizes, inter-node links, measured tables as CSV, and plan collectives.

use fwdbench::dist::comm_model::{
    estimate_collective, CommModel, CommOp, CommTable, CommTableError, Mode, PUBLIC_SOURCE,
};
use fwdbench::plan::{Collective, CollectiveDim, DType, Group, Op, TensorId, TensorInfo, View};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn sizes() -> impl Iterator<Item = u64> {
    // 1 B to 2 GiB in quarter-octave steps: below, between and beyond the table's sizes.
    (0..=124).map(|i| 2f64.powf(i as f64 / 4.0).round() as u64)
}

#[test]
fn interpolation_hits_the_public_points_exactly() {
    let model = CommModel::builtin();
    let table = CommTable::public_h200();
    // The all-reduce and all-gather rows rise monotonically, so every point is kept as is.
    for p in table.points.iter().filter(|p| matches!(p.op, CommOp::AllReduce | CommOp::AllGather)) {
        let got = model.predict(p.op, p.ranks, p.bytes, Mode::Eager, false);
        assert!(
            (got.us - p.us_median).abs() < 1e-9,
            "{:?} {} ranks {} B: {} vs {}",
            p.op,
            p.ranks,
            p.bytes,
            got.us,
            p.us_median
        );
        assert_eq!(got.source, PUBLIC_SOURCE);
    }
    let ar8 = |bytes| model.predict(CommOp::AllReduce, 8, bytes, Mode::Eager, false).us;
    assert_eq!(ar8(MIB), 26.1);
    // Log-log between 1 MiB (26.1) and 4 MiB (51.4): 2 MiB is their geometric mean.
    assert!((ar8(2 * MIB) - (26.1f64 * 51.4).sqrt()).abs() < 1e-9);
}

#[test]
fn time_never_falls_as_messages_grow() {
    let model = CommModel::builtin();
    for op in CommOp::ALL {
        for ranks in [2, 4, 8, 16] {
            for mode in [Mode::Eager, Mode::Graph] {
                let times: Vec<f64> = sizes().map(|b| model.predict(op, ranks, b, mode, ranks > 8).us).collect();
                assert!(times.iter().all(|t| t.is_finite() && *t > 0.0), "{op:?} x{ranks}");
                let drop = times.windows(2).position(|w| w[1] < w[0]);
                assert!(drop.is_none(), "{op:?} x{ranks} {mode:?}: falls after {:?}", drop.map(|i| &times[i..i + 2]));
            }
        }
    }
    // The noisy dip of the published reduce-scatter row is flattened, not followed.
    let rs = |b| model.predict(CommOp::ReduceScatter, 8, b, Mode::Eager, false).us;
    assert_eq!((rs(16 * KIB), rs(128 * KIB)), (13.3, 13.3));
}

#[test]
fn more_ranks_cost_more_and_other_sizes_are_labelled() {
    let model = CommModel::builtin();
    for bytes in sizes().skip(40) {
        let t = |ranks| model.predict(CommOp::AllReduce, ranks, bytes, Mode::Eager, false).us;
        assert!(t(2) < t(8), "{bytes} B: x2 {} vs x8 {}", t(2), t(8));
        assert!(t(4) <= t(8), "{bytes} B");
    }
    let x4 = model.predict(CommOp::AllGather, 4, MIB, Mode::Eager, false);
    assert!(x4.source.contains("scaled from 8 to 4 ranks by ring factors"), "{}", x4.source);
    let graph = model.predict(CommOp::AllReduce, 8, MIB, Mode::Graph, false);
    assert!(graph.source.ends_with("eager figures"), "{}", graph.source);
    let huge = model.predict(CommOp::AllReduce, 8, 2048 * MIB, Mode::Eager, false);
    assert!(huge.source.contains("alpha-beta beyond") && huge.us > 2040.0);
    // Beyond 512 MiB the line through 64 MiB and 512 MiB continues: slope ~3.84 us/MiB.
    assert!((huge.us - (2040.0 + 1536.0 * (2040.0 - 319.6) / 448.0)).abs() < 1e-6, "{}", huge.us);
    assert_eq!(model.predict(CommOp::AllReduce, 1, MIB, Mode::Eager, false).us, 0.0);
}

#[test]
fn groups_across_nodes_pay_the_inter_node_link() {
    let model = CommModel::builtin();
    let intra = model.predict(CommOp::AllReduce, 8, 64 * MIB, Mode::Graph, false);
    let inter = model.predict(CommOp::AllReduce, 16, 64 * MIB, Mode::Graph, true);
    // 64 MiB x 2*15/16 over 50 GB/s per GPU is ~2.5 ms on top of the node's 0.32 ms.
    let link_us = 10.0 + (64 * MIB) as f64 * 1.875 / 50e3;
    assert!((inter.us - intra.us - link_us).abs() < 1e-6, "{} vs {} + {link_us}", inter.us, intra.us);
    assert!(inter.source.starts_with("alpha-beta inter-node (10 us, 50 GB/s per GPU)"), "{}", inter.source);
}

#[test]
fn measured_tables_round_trip_and_replace_their_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comm_h200x2.csv");
    let mut table = CommTable::public_h200();
    table.points.retain(|p| p.ranks == 2);
    for p in &mut table.points {
        p.mode = Mode::Graph;
        p.us_median *= 0.5;
        p.us_p10 = p.us_median * 0.9;
    }
    table.save(&path).unwrap();
    let loaded = CommTable::load(&path).unwrap();
    assert_eq!(loaded.points.len(), table.points.len());
    for (a, b) in loaded.points.iter().zip(&table.points) {
        assert_eq!((a.op, a.ranks, a.bytes, a.mode), (b.op, b.ranks, b.bytes, b.mode));
        assert!((a.us_median - b.us_median).abs() < 1e-3 && (a.busbw_gbs - b.busbw_gbs).abs() < 1e-3);
    }
    let model = CommModel::builtin().with_measured(&loaded);
    let graph = model.predict(CommOp::AllReduce, 2, MIB, Mode::Graph, false);
    assert_eq!(graph.source, format!("measured {}", path.display()));
    assert!((graph.us - 7.15).abs() < 1e-3);
    // Series the measured table lacks keep the public figures.
    assert_eq!(model.predict(CommOp::AllReduce, 8, MIB, Mode::Eager, false).source, PUBLIC_SOURCE);
}

#[test]
fn bad_tables_name_the_file_and_line() {
    let header = "op,ranks,bytes,graph,us_median,us_p10,us_p90,busbw_gbs\n";
    let good = "all_reduce,8,1024,true,20,19,21,0.1\n";
    let cases = [
        ("op,ranks,bytes\nall_reduce,8,1024\n".to_string(), "line 1: the header is `op,ranks,bytes`"),
        (format!("{header}{good}broadcast,8,1024,true,20,19,21,0.1\n"), "line 3: unknown collective `broadcast`"),
        (format!("{header}{good}all_gather,8,-5,false,20,19,21,0.1\n"), "line 3: bytes `-5` is not a positive integer"),
        (format!("{header}all_gather,8,64,maybe,20,19,21,0.1\n"), "line 2: graph `maybe`"),
        (format!("{header}all_gather,8,64,false,20,25,21,0.1\n"), "line 2: us_p10 25"),
        (format!("{header}{good}{good}"), "line 3: a second row for all_reduce over 8 ranks at 1024 bytes"),
        (format!("{header}all_gather,8,64\n"), "line 2"),
    ];
    for (text, want) in cases {
        let e = match CommTable::parse(&text, "results/comm.csv") {
            Err(e @ CommTableError::Line { .. }) => e.to_string(),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        };
        assert!(e.starts_with(&format!("results/comm.csv {want}")), "{e}");
    }
}

#[test]
fn plan_collectives_move_nccl_tests_message_bytes() {
    let tensors = vec![
        TensorInfo { name: "hidden".into(), rows: 16, cols: 4096, dtype: DType::BF16 },
        TensorInfo { name: "logits_shard".into(), rows: 16, cols: 1000, dtype: DType::F32 },
        TensorInfo { name: "logits".into(), rows: 16, cols: 8000, dtype: DType::F32 },
        TensorInfo { name: "hidden_rows".into(), rows: 2, cols: 4096, dtype: DType::BF16 },
    ];
    let full = |i: usize| View { id: TensorId(i), col: 0, cols: tensors[i].cols };
    let model = CommModel::builtin();
    let group: Vec<usize> = (0..8).collect();
    let est = |kind, x, out, group: &[usize]| {
        let op = Op::Collective { kind, group: Group::World, x, out };
        estimate_collective(&op, group, &tensors, &model, Mode::Graph).unwrap()
    };
    let ar = est(Collective::AllReduce, full(0), full(0), &group);
    assert_eq!((ar.op, ar.ranks, ar.message_bytes), (CommOp::AllReduce, 8, 16 * 4096 * 2));
    assert!((ar.link_bytes_per_rank - 131072.0 * 1.75).abs() < 1e-9);
    assert_eq!(ar.prediction, model.predict(CommOp::AllReduce, 8, 131072, Mode::Graph, false));
    let ag = est(Collective::AllGather(CollectiveDim::Cols), full(1), full(2), &group);
    assert_eq!((ag.op, ag.message_bytes), (CommOp::AllGather, 16 * 8000 * 4));
    let rs = est(Collective::ReduceScatterRows, full(0), full(3), &group);
    assert_eq!((rs.op, rs.message_bytes), (CommOp::ReduceScatter, 16 * 4096 * 2));
    // A column window counts only its columns.
    let window = View { id: TensorId(0), col: 1024, cols: 1024 };
    assert_eq!(est(Collective::AllReduce, window, window, &group).message_bytes, 16 * 1024 * 2);
    // DP peers 0 and 8 sit on two nodes; ranks 0..8 on one.
    let across = est(Collective::AllReduce, full(0), full(0), &[0, 8]);
    assert!(across.prediction.source.starts_with("alpha-beta inter-node"), "{}", across.prediction.source);
    assert_eq!(est(Collective::AllReduce, full(0), full(0), &[3]).prediction.us, 0.0);
    let not_collective = Op::GatherRows { x: full(0), rows: vec![0], out: full(3) };
    assert!(estimate_collective(&not_collective, &group, &tensors, &model, Mode::Graph).is_none());
}
