//! `--routing` end to end on the CPU executor: the choice each mode makes inside a real
//! forward, the counts the bench reads back after timing, and the MoE bytes and MBU they
//! give a row.

use std::path::Path;

use fwdbench::bench::load::measure_expert_load;
use fwdbench::config::hf::load_model_config;
use fwdbench::config::model::ModelConfig;
use fwdbench::exec::cpu::run::CpuExecutor;
use fwdbench::exec::Executor;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::cost::{ExpertLoad, PhaseCost};
use fwdbench::plan::{Op, Plan, RankLayout, RoutingMode, Shape};
use fwdbench::report::{Row, Stats, COPY_GBS};
use fwdbench::weights::RandomWeights;

/// Qwen3-MoE fixture: 2 MoE layers, 8 experts, top-2, hidden 64.
fn qwen3_moe(sets: &[(&str, &str)]) -> ModelConfig {
    let sets: Vec<(String, String)> = sets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    load_model_config(Path::new("tests/fixtures/qwen3_moe/config.json"), &sets).unwrap()
}

fn plan(cfg: &ModelConfig, shape: Shape, mode: RoutingMode, seed: u64) -> Plan {
    let mut plan = build_plan(cfg, RankLayout::single(), shape, PlanOptions::default()).unwrap();
    plan.set_routing(mode, seed);
    plan
}

/// One CPU forward of `plan`: the load `measure_expert_load` reports, and a direct count
/// of every route op's ids after a plain `forward` (the CPU keeps every activation).
fn run_both_ways(cfg: &ModelConfig, plan: &Plan) -> (ExpertLoad, ExpertLoad) {
    let src = RandomWeights { seed: 3 };
    let mut exec = CpuExecutor::new(cfg, vec![RankLayout::single()], &src, true);
    exec.bind(vec![plan.clone()]).unwrap();
    let s = plan.shape;
    exec.set_ids(&fwdbench::inputs::random_ids(s.batch, s.new_tokens_per_seq(), cfg.vocab_size, 9)).unwrap();
    let experts = cfg.moe.as_ref().unwrap().num_experts;
    let measured = measure_expert_load(&mut exec, experts).unwrap().expect("a MoE plan has a load");
    exec.forward().unwrap();
    let mut direct = ExpertLoad::default();
    for p in &plan.ops {
        if let Op::Route { ids, .. } = &p.op {
            let values = exec.read_tensor(ids.id).unwrap();
            let mut counts = vec![0u32; experts];
            values.iter().for_each(|&e| counts[e as usize] += 1);
            direct.layers.push(counts);
        }
    }
    (measured, direct)
}

#[test]
fn cpu_counts_match_a_direct_count_in_every_mode() {
    let cfg = qwen3_moe(&[]);
    for mode in [RoutingMode::Model, RoutingMode::Balanced, RoutingMode::Uniform] {
        let (measured, direct) = run_both_ways(&cfg, &plan(&cfg, Shape::prefill(2, 5), mode, 4));
        assert_eq!(measured, direct, "{mode:?}");
        assert_eq!(measured.layers.len(), 2);
        assert!(measured.layers.iter().all(|l| l.iter().sum::<u32>() == 2 * 5 * 2), "{mode:?}: {measured:?}");
    }
}

#[test]
fn balanced_forward_gives_every_expert_its_share() {
    // (tokens, experts, top_k): divisible, a remainder, fewer slots than experts, decode.
    for (batch, seq, experts, top_k, phase) in
        [(2, 8, 8, 2, "prefill"), (1, 7, 8, 2, "prefill"), (1, 3, 12, 3, "prefill"), (3, 4, 8, 2, "decode")]
    {
        let cfg = qwen3_moe(&[("num_experts", &experts.to_string()), ("num_experts_per_tok", &top_k.to_string())]);
        let shape = if phase == "prefill" { Shape::prefill(batch, seq) } else { Shape::decode(batch, seq) };
        let tokens = shape.tokens();
        let (load, _) = run_both_ways(&cfg, &plan(&cfg, shape, RoutingMode::Balanced, 0));
        // The rule: floor(T*k/E) each, one more for the first T*k mod E experts of the
        // order (one shard here, so the first experts by index).
        let (share, rem) = ((tokens * top_k / experts) as u32, tokens * top_k % experts);
        for layer in &load.layers {
            let want: Vec<u32> = (0..experts).map(|e| share + u32::from(e < rem)).collect();
            assert_eq!(layer, &want, "T {tokens} E {experts} k {top_k}");
        }
        assert_eq!(load.max_expert_tokens(), share + u32::from(rem > 0));
    }
}

#[test]
fn uniform_forward_is_seeded_and_the_router_is_not() {
    let cfg = qwen3_moe(&[]);
    let shape = Shape::prefill(2, 16);
    let load = |mode, seed| run_both_ways(&cfg, &plan(&cfg, shape, mode, seed)).0;
    assert_eq!(load(RoutingMode::Uniform, 5), load(RoutingMode::Uniform, 5));
    assert_ne!(load(RoutingMode::Uniform, 5), load(RoutingMode::Uniform, 6));
    // The router's choice does not depend on the routing seed.
    assert_eq!(load(RoutingMode::Model, 5), load(RoutingMode::Model, 6));
}

#[test]
fn expert_parallel_plans_balance_over_their_shards() {
    let cfg = qwen3_moe(&[]);
    let layout = fwdbench::dist::rank_layouts(2, 2, 1).unwrap()[1];
    let mut p = build_plan(&cfg, layout, Shape::prefill(1, 3), PlanOptions::default()).unwrap();
    p.set_routing(RoutingMode::Balanced, 0);
    assert_eq!(p.routing(), RoutingMode::Balanced);
    let choice = p.ops.iter().find_map(|o| match &o.op {
        Op::Route { choice, .. } => Some(*choice),
        _ => None,
    });
    assert_eq!(choice, Some(fwdbench::plan::ExpertChoice::Balanced { ep_groups: 2 }));
}

/// DeepSeek-V3 prefill 1x128 (the 107% MBU row): under a skewed routing the
/// uniform guess counts experts that never ran; the counted bytes make the fastest time a
/// GPU could reach (streaming exactly what it must read) an MBU of 100%, never more.
#[test]
fn bytes_from_counts_keep_mbu_at_or_below_100_percent() {
    let cfg = load_model_config(
        Path::new("model_conf/deepseek/config_2l.json"),
        &[("first_k_dense_replace".into(), "0".into())],
    )
    .unwrap();
    let plan = build_plan(&cfg, RankLayout::single(), Shape::prefill(1, 128), PlanOptions::default()).unwrap();
    let moe = cfg.moe.as_ref().unwrap();
    let layers = plan.ops.iter().filter(|p| matches!(p.op, Op::Moe { .. })).count();
    assert!(layers > 0);
    // 128 tokens x top-8 over 48 of the 256 experts (a random router's kind of skew).
    let skewed: Vec<u32> = (0..moe.num_experts).map(|e| if e < 48 { (128 * 8 / 48 + 1) as u32 } else { 0 }).collect();
    let load = ExpertLoad { layers: vec![skewed; layers] };
    let uniform = PhaseCost::of(&plan, &cfg);
    let counted = PhaseCost::with_load(&plan, &cfg, &load);
    assert!(counted.weight_bytes < uniform.weight_bytes, "{counted:?} vs {uniform:?}");
    let fastest_ms = counted.mbu_bytes() / (COPY_GBS * 1e9) * 1e3;
    let stats = Stats::of(&[fastest_ms]);
    let honest = Row::new(&plan, &counted, stats, false);
    let guessed = Row::new(&plan, &uniform, stats, false);
    assert!(honest.mbu <= 1.0 + 1e-9, "counted MBU {}", honest.mbu);
    assert!(guessed.mbu > 1.0, "the uniform guess overstates MBU: {}", guessed.mbu);
    // Every expert touched: the counted bytes reach, and never pass, all experts' bytes.
    let all = ExpertLoad { layers: vec![vec![4; moe.num_experts]; layers] };
    let full = PhaseCost::with_load(&plan, &cfg, &all);
    assert!(full.weight_bytes >= uniform.weight_bytes && full.weight_bytes >= counted.weight_bytes);
}

#[test]
fn the_conf_key_routing_is_read_and_checked() {
    use fwdbench::config::run_conf::{load_run_conf, parse_cli_pairs, ConfLayers};
    let dep = |value: &str| {
        let cli = parse_cli_pairs(&[format!("routing={value}")]).unwrap();
        load_run_conf(Path::new("conf"), &ConfLayers::new("tp1"), &cli).unwrap().deployment()
    };
    assert_eq!(dep("balanced").unwrap().routing, RoutingMode::Balanced);
    assert_eq!(dep("uniform").unwrap().routing, RoutingMode::Uniform);
    let none = load_run_conf(Path::new("conf"), &ConfLayers::new("tp1"), &[]).unwrap();
    assert_eq!(none.deployment().unwrap().routing, RoutingMode::Model);
    assert!(none.ignored_keys().iter().all(|k| k != "routing"));
    let err = dep("skewed").unwrap_err().to_string();
    assert!(err.contains("`routing`") && err.contains("model, balanced or uniform"), "{err}");
    for name in RoutingMode::NAMES {
        assert_eq!(RoutingMode::parse(name).map(RoutingMode::name), Some(name));
    }
}
