//! Property: after every window, the rows the incremental engine has emitted
//! so far equal a from-scratch recompute over the current table, value for
//! value (decimal scales included), and no retraction ever misses.

use crate::model::{engine, fold_results, recompute, steps, windows, Rows, Table};
use mdp_report::{ApplyStats, ChunkSizes, Engine, MemoryStateStore};
use mdp_types::{ChangeEvent, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeMap;

/// Fixed seed (override with `PROPTEST_RNG_SEED`); `PROPTEST_CASES`
/// overrides the number of cases.
pub fn config(cases: u32) -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// `engine` as shipped, or (`chunked`) with chunk sizes so small that the
/// generated groups' MIN, MAX and COUNT(DISTINCT) multisets are stored in
/// chunks, split, emptied and brought back inline.
pub fn sized(engine: Engine, chunked: bool) -> Engine {
    if !chunked {
        return engine;
    }
    engine.with_chunk_sizes(ChunkSizes {
        spill_above: 2,
        inline_at_most: 1,
        chunk_max: 3,
        chunk_fill: 2,
        range_read_from: 2,
    })
}

fn assert_clean(stats: &ApplyStats) -> Result<(), TestCaseError> {
    prop_assert_eq!(stats.missing_group_retractions, 0, "{:?}", stats);
    prop_assert_eq!(stats.inconsistent_retractions, 0, "{:?}", stats);
    prop_assert_eq!(stats.malformed_events, 0, "{:?}", stats);
    prop_assert_eq!(stats.missing_columns, 0, "{:?}", stats);
    Ok(())
}

/// Equal rows, including value types and decimal scales (`Value`'s own
/// equality treats 1.5 and 1.50 as equal).
fn same(a: &BTreeMap<String, Rows>, b: &BTreeMap<String, Rows>) -> bool {
    let typed_eq = |x: &Value, y: &Value| match (x, y) {
        (Value::D(p), Value::D(q)) => p == q && p.scale() == q.scale(),
        _ => std::mem::discriminant(x) == std::mem::discriminant(y) && x == y,
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|((ra, ga), (rb, gb))| {
            ra == rb
                && ga.len() == gb.len()
                && ga.iter().zip(gb).all(|((ka, va), (kb, vb))| {
                    ka == kb
                        && va.len() == vb.len()
                        && va.iter().zip(vb).all(|(x, y)| typed_eq(x, y))
                })
        })
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn incremental_results_equal_a_recompute(steps in steps(100), sizes in windows(), chunked in any::<bool>()) {
        let engine = sized(engine(), chunked);
        let mut store = MemoryStateStore::new();
        let mut table = Table::default();
        let mut served = BTreeMap::new();
        let mut pending: Vec<ChangeEvent> = Vec::new();
        let mut in_window = 0;
        let mut window = 0;
        for (i, step) in steps.iter().enumerate() {
            let (events, _) = table.apply(step);
            pending.extend(events);
            in_window += 1;
            if in_window < sizes[window % sizes.len()] && i + 1 < steps.len() {
                continue;
            }
            let (rows, stats) = engine.apply_with_stats(&mut store, &pending).map_err(|e| TestCaseError::fail(e.to_string()))?;
            assert_clean(&stats)?;
            fold_results(&mut served, rows);
            served.retain(|_, rows: &mut Rows| !rows.is_empty());
            let expected = recompute(&table);
            prop_assert!(same(&served, &expected), "incremental:\n{:#?}\nrecompute:\n{:#?}", served, expected);
            pending.clear();
            in_window = 0;
            window += 1;
        }
        // Deleting every row leaves no rows served and no state behind.
        let ids: Vec<usize> = (0..table.rows.len()).collect();
        for _ in ids {
            let (events, _) = table.apply(&crate::model::Step::Delete { pick: 0 });
            pending.extend(events);
        }
        let (rows, stats) = engine.apply_with_stats(&mut store, &pending).map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_clean(&stats)?;
        fold_results(&mut served, rows);
        served.retain(|_, rows: &mut Rows| !rows.is_empty());
        prop_assert!(served.is_empty(), "rows left: {:?}", served);
        prop_assert_eq!(store.size_bytes(), 0);
    }
}
