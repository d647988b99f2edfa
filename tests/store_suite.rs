//! The store test suite, run against both backends: every scenario runs once on a fresh
//! redb file and once on a fresh PostgreSQL database, and must behave the same on both.

use crate::support::postgres::fresh_database;
use auxot::crypto::MasterKey;
use auxot::store::*;

/// Runs `$scenario(store)` on redb, then on PostgreSQL (skipped with a reason when
/// PostgreSQL is not installed and not required).
macro_rules! on_both_backends {
    ($($name:ident => $scenario:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redb() {
                let dir = tempfile::tempdir().unwrap();
                let store = auxot::store::Store::open(dir.path()).unwrap();
                store.initialize(None, None).unwrap();
                super::$scenario(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let Some(url) = super::fresh_database().await else { return };
                let store = auxot::store::Store::connect_postgres(&url).await.unwrap();
                store.initialize_shared(None, None).await.unwrap();
                super::$scenario(store).await;
            }
        }
    )*};
}

on_both_backends! {
    provider_names_are_unique_and_follow_renames => provider_names;
    api_key_names_are_unique_and_missing_keys_are_not_found => api_keys;
    the_last_admin_stays_and_ending_an_account_ends_its_sessions => admins;
    aliases_and_agents_refuse_duplicates_and_missing_names => aliases_and_agents;
    settings_default_until_written => settings;
    usage_reads_by_time_and_the_log_pages_newest_first => usage_and_log;
    pruning_folds_rows_into_daily_rollups => pruning;
    spend_adds_up_per_key_and_month => spend;
    rows_written_again_after_an_unknown_outcome_are_kept_once => usage_once;
    prices_are_seeded_and_editable => prices;
    conversations_list_newest_first => conversations;
    the_key_state_holds_the_canary_and_schema_version => key_state;
    scans_longer_than_a_page_keep_their_order_both_ways => long_scans;
    batches_that_overlap_in_time_are_filtered_newest_first_before_and_after_pruning => overlapping_batches;
    worker_presence_is_shared_between_routers_and_goes_stale => presence;
}

fn provider(id: &str, name: &str) -> ProviderRecord {
    ProviderRecord {
        id: id.into(),
        name: name.into(),
        kind: ProviderKind::Openai,
        base_url: "http://127.0.0.1:9/v1".into(),
        sealed_key: None,
        key_hint: "…abcd".into(),
        priority: 0,
        enabled: true,
        created_at: 1,
        updated_at: 1,
    }
}

fn models(ids: &[&str]) -> ModelCache {
    ModelCache {
        models: ids
            .iter()
            .map(|id| CachedModel {
                id: id.to_string(),
                display_name: None,
                created: None,
            })
            .collect(),
        fetched_at: 7,
    }
}

async fn provider_names(store: Store) {
    store
        .insert_provider(provider("p1", "Main"), models(&["gpt-4o"]))
        .await
        .unwrap();
    let taken = store
        .insert_provider(provider("p2", "main"), models(&[]))
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict(_)), "{taken}");
    assert!(store.provider_name_taken("MAIN", None).await.unwrap());
    assert!(!store.provider_name_taken("main", Some("p1")).await.unwrap());
    store
        .insert_provider(provider("p2", "Backup"), models(&[]))
        .await
        .unwrap();
    // A rename frees the old name and claims the new one.
    store.update_provider(provider("p1", "Primary"), None).await.unwrap();
    assert!(!store.provider_name_taken("main", None).await.unwrap());
    let clash = store.update_provider(provider("p1", "backup"), None).await.unwrap_err();
    assert!(matches!(clash, StoreError::Conflict(_)));
    store.put_models("p2", models(&["a", "b"])).await.unwrap();
    assert!(matches!(
        store.put_models("nope", models(&[])).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    let all = store.providers_with_models().await.unwrap();
    let names: Vec<(&str, usize)> = all.iter().map(|(p, m)| (p.name.as_str(), m.models.len())).collect();
    assert_eq!(names, vec![("Primary", 1), ("Backup", 2)]);
    let removed = store.delete_provider("p1").await.unwrap();
    assert_eq!(removed.name, "Primary");
    assert!(matches!(
        store.get_provider("p1").await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert!(!store.provider_name_taken("primary", None).await.unwrap());
    assert_eq!(store.list_providers().await.unwrap().len(), 1);
}

fn api_key(id: &str, name: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: name.into(),
        role: Role::Client,
        key_hash: format!("hash-{id}"),
        prefix: "aux_abcd".into(),
        created_at: 1,
        rpm_limit: Some(10),
        monthly_spend_cap_usd: None,
        tpm_limit: None,
        allowed_models: Vec::new(),
        allowed_tiers: Vec::new(),
        expires_at: None,
    }
}

async fn api_keys(store: Store) {
    store.insert_api_key(api_key("k1", "Laptop")).await.unwrap();
    assert!(matches!(
        store.insert_api_key(api_key("k2", "LAPTOP")).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert!(matches!(
        store.update_api_key(api_key("k9", "x")).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    let mut changed = api_key("k1", "Laptop");
    changed.rpm_limit = Some(99);
    store.update_api_key(changed).await.unwrap();
    assert_eq!(store.list_api_keys().await.unwrap()[0].rpm_limit, Some(99));
    assert_eq!(store.delete_api_key("k1").await.unwrap().name, "Laptop");
    assert!(matches!(
        store.delete_api_key("k1").await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    store
        .insert_worker_token(WorkerTokenRecord {
            id: "w1".into(),
            name: "gpu box".into(),
            kind: WorkerKind::Gpu,
            token_hash: "h".into(),
            prefix: "p".into(),
            created_at: 1,
            monthly_price_usd: None,
            allowed_models: None,
        })
        .await
        .unwrap();
    assert_eq!(store.list_worker_tokens().await.unwrap().len(), 1);
    assert_eq!(store.delete_worker_token("w1").await.unwrap().name, "gpu box");
}

fn admin(name: &str, role: AdminRole) -> AdminRecord {
    AdminRecord {
        username: name.into(),
        password_hash: "$argon2id$x".into(),
        created_at: 1,
        role,
    }
}

async fn admins(store: Store) {
    assert!(!store.admin_exists().await.unwrap());
    store.create_first_admin(admin("Ann", AdminRole::Admin)).await.unwrap();
    assert!(matches!(
        store
            .create_first_admin(admin("Bob", AdminRole::Admin))
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
    store.insert_admin(admin("Bob", AdminRole::Viewer)).await.unwrap();
    assert!(matches!(
        store.insert_admin(admin("bob", AdminRole::Viewer)).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert_eq!(store.get_admin("ANN").await.unwrap().unwrap().username, "Ann");
    let session = |user: &str, expires_at| SessionRecord {
        username: user.into(),
        created_at: 0,
        expires_at,
    };
    store.insert_session("s1".into(), session("Bob", 100)).await.unwrap();
    store.insert_session("s2".into(), session("Ann", 5)).await.unwrap();
    assert!(matches!(
        store.delete_admin("ann").await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert_eq!(store.delete_admin("bob").await.unwrap().username, "Bob");
    assert!(
        store.get_session("s1".into()).await.unwrap().is_none(),
        "Bob's session ended"
    );
    assert_eq!(store.prune_sessions(10).await.unwrap(), 1);
    assert!(store.get_session("s2".into()).await.unwrap().is_none());
    assert_eq!(store.count_admin_role().await.unwrap(), 1);
}

async fn aliases_and_agents(store: Store) {
    let aliases = store.list_aliases().await.unwrap();
    assert_eq!(aliases, vec![AliasRecord::auto()], "auto is seeded");
    let coder = AliasRecord {
        name: "coder".into(),
        gpu: Some("qwen".into()),
        cli: None,
        cloud: Some("openai/gpt-4o".into()),
        client_models: vec!["claude-*".into()],
    };
    store.put_alias(coder.clone(), true).await.unwrap();
    assert!(matches!(
        store.put_alias(coder.clone(), true).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    let mut missing = coder.clone();
    missing.name = "nope".into();
    assert!(matches!(
        store.put_alias(missing, false).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    store.delete_alias("coder").await.unwrap();
    assert!(matches!(
        store.delete_alias("coder").await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    let agent = AgentRecord {
        name: "Reviewer".into(),
        system_prompt: Some("be terse".into()),
        model: "auto".into(),
        tier_order: None,
        queue_timeout_ms: None,
        created_at: 1,
        updated_at: 1,
    };
    store.put_agent(agent.clone(), true).await.unwrap();
    let mut same = agent.clone();
    same.name = "reviewer".into();
    assert!(matches!(
        store.put_agent(same, true).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert_eq!(store.list_agents().await.unwrap(), vec![agent]);
    store.delete_agent("REVIEWER").await.unwrap();
    assert!(store.list_agents().await.unwrap().is_empty());
}

async fn settings(store: Store) {
    assert_eq!(store.routing_settings().await.unwrap(), RoutingSettings::default());
    let routing = RoutingSettings {
        default_order: vec!["cloud".into()],
        queue_timeout_ms: 5,
        ..Default::default()
    };
    store.put_routing_settings(routing.clone()).await.unwrap();
    assert_eq!(store.routing_settings().await.unwrap(), routing);
    assert_eq!(
        store.admin_agent_settings().await.unwrap(),
        AdminAgentSettings::default()
    );
    let equivalents = EquivalentSettings {
        default_model: Some("gpt-4o-mini".into()),
        ..Default::default()
    };
    store.put_equivalent_settings(equivalents.clone()).await.unwrap();
    assert_eq!(store.equivalent_settings().await.unwrap(), equivalents);
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01

fn row(i: i64) -> UsageRecord {
    UsageRecord {
        at_ms: T0 + i * 1000,
        api_key_id: Some(format!("key-{}", i % 3)),
        session: Some(format!("s-{}", i / 10)),
        tier: Some(if i % 2 == 0 { "gpu" } else { "cloud" }.into()),
        route: Some("box\0one".into()),
        model: "auto".into(),
        model_served: Some("m".into()),
        input_tokens: 10,
        output_tokens: 5,
        cost_usd: if i % 2 == 0 { 0.0 } else { 0.25 },
        cloud_equivalent_usd: 0.1,
        ms_to_first_byte: Some(3),
        ms_total: 9,
        outcome: if i % 5 == 0 { "error:timeout" } else { "ok" }.into(),
        status: if i % 5 == 0 { 504 } else { 200 },
        router: Some("r1".into()),
        ..Default::default()
    }
}

async fn usage_and_log(store: Store) {
    // Two rows in the same millisecond both keep their place.
    let mut rows: Vec<UsageRecord> = (0..40).map(row).collect();
    rows.push(row(39));
    let next = store.insert_usage(rows, 0).await.unwrap();
    assert!(next >= 41);
    assert_eq!(store.usage_row_count().await.unwrap(), 41);
    let window = store.usage_between(T0 + 10_000, T0 + 20_000).await.unwrap();
    let times: Vec<i64> = window.iter().map(|r| (r.at_ms - T0) / 1000).collect();
    assert_eq!(times, (10..20).collect::<Vec<_>>());
    assert!(store.usage_between(T0 + 5, T0).await.unwrap().is_empty());

    let query = |filters: Vec<(LogField, String)>, before| LogQuery {
        from_ms: T0,
        to_ms: T0 + 1_000_000,
        before,
        filters,
        limit: 7,
        max_scan: 10_000,
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.request_log(query(Vec::new(), before)).await.unwrap();
        seen.extend(page.rows.iter().map(|(k, _)| *k));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 41, "every row once");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");

    let errors = store
        .request_log(query(
            vec![(LogField::Outcome, "error".into()), (LogField::Tier, "gpu".into())],
            None,
        ))
        .await
        .unwrap();
    let picked: Vec<i64> = errors.rows.iter().map(|(_, r)| (r.at_ms - T0) / 1000).collect();
    assert_eq!(picked, vec![30, 20, 10, 0]);
    let by_route = store
        .request_log(query(vec![(LogField::Route, "box\0one".into())], None))
        .await
        .unwrap();
    assert_eq!(by_route.rows.len(), 7);
    assert_eq!(by_route.rows[0].1.at_ms, T0 + 39_000);

    // Values most rows carry have no index entries: found by scanning rows, page by page.
    for filter in [
        (LogField::Status, "200".to_string()),
        (LogField::Outcome, "ok".to_string()),
    ] {
        let mut found = Vec::new();
        let mut before = None;
        loop {
            let page = store.request_log(query(vec![filter.clone()], before)).await.unwrap();
            found.extend(page.rows.iter().map(|(_, r)| (r.at_ms - T0) / 1000));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        found.dedup();
        let expected: Vec<i64> = (0..40).rev().filter(|i| i % 5 != 0).collect();
        assert_eq!(found, expected, "{filter:?}");
    }
    let ok_on_gpu = store
        .request_log(query(
            vec![(LogField::Status, "200".into()), (LogField::Tier, "gpu".into())],
            None,
        ))
        .await
        .unwrap();
    assert!(ok_on_gpu
        .rows
        .iter()
        .all(|(_, r)| r.status == 200 && r.tier.as_deref() == Some("gpu")));
    assert_eq!(ok_on_gpu.rows.len(), 7);
}

/// More rows than one round trip of a PostgreSQL scan fetches (256), read both ways.
async fn long_scans(store: Store) {
    let count = 700;
    store.insert_usage((0..count).map(row).collect(), 0).await.unwrap();
    let all = store.usage_between(T0, T0 + count * 1000).await.unwrap();
    assert_eq!(all.len() as i64, count);
    assert!(all.windows(2).all(|w| w[0].at_ms < w[1].at_ms), "oldest first");
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .request_log(LogQuery {
                from_ms: T0,
                to_ms: T0 + count * 1000,
                before,
                filters: vec![(LogField::Tier, "cloud".into())],
                limit: 300,
                max_scan: 10_000,
            })
            .await
            .unwrap();
        seen.extend(page.rows.iter().map(|(_, r)| r.at_ms));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, count / 2, "every cloud row once");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first across pages");
    let step = store.prune_usage_step(T0 + 600_000, 1_000_000, 650).await.unwrap();
    assert_eq!((step.removed, step.more), (600, false));
    assert_eq!(store.usage_row_count().await.unwrap(), 100);
}

/// Rows finish out of order and several routers write at once, so the batches a filter's
/// index entries come from overlap in time: every filtered page must still hold each
/// matching row once, newest first, as a scan of all rows would find them.
async fn overlapping_batches(store: Store) {
    // A deterministic shuffle: each batch takes rows from a 3-second window that slides
    // by one second, so neighbouring batches interleave.
    let mut rows: Vec<UsageRecord> = Vec::new();
    for batch in 0..12i64 {
        let mut part: Vec<UsageRecord> = (0..25i64)
            .map(|j| {
                let mut r = row(0);
                r.at_ms = T0 + batch * 1_000 + (j * 7_919 + batch * 104_729) % 3_000;
                r.api_key_id = Some(format!("key-{}", (j + batch) % 4));
                r.tier = Some(if j % 3 == 0 { "gpu" } else { "cloud" }.into());
                r.session = Some(format!("s-{}", j % 2));
                r
            })
            .collect();
        rows.extend(part.iter().cloned());
        store
            .insert_usage(std::mem::take(&mut part), (batch as u32) * 1_000)
            .await
            .unwrap();
    }
    let everything = store.usage_between(T0, T0 + 60_000).await.unwrap();
    assert_eq!(everything.len(), rows.len());
    let read = |filters: Vec<(LogField, String)>, limit: usize| {
        let store = store.clone();
        async move {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = store
                    .request_log(LogQuery {
                        from_ms: T0 + 500,
                        to_ms: T0 + 12_500,
                        before,
                        filters: filters.clone(),
                        limit,
                        max_scan: 100_000,
                    })
                    .await
                    .unwrap();
                seen.extend(page.rows);
                match page.next {
                    Some(next) => before = Some(next),
                    None => return seen,
                }
            }
        }
    };
    let all = read(Vec::new(), 1_000).await;
    for filters in [
        vec![(LogField::ApiKey, "key-1".to_string())],
        vec![(LogField::Tier, "gpu".to_string())],
        vec![
            (LogField::Session, "s-0".to_string()),
            (LogField::Tier, "cloud".to_string()),
        ],
        vec![(LogField::ApiKey, "key-9".to_string())],
    ] {
        let expected: Vec<u128> = all
            .iter()
            .filter(|(_, r)| {
                filters.iter().all(|(field, value)| match field {
                    LogField::ApiKey => r.api_key_id.as_deref() == Some(value),
                    LogField::Tier => r.tier.as_deref() == Some(value),
                    LogField::Session => r.session.as_deref() == Some(value),
                    _ => unreachable!(),
                })
            })
            .map(|(k, _)| *k)
            .collect();
        for limit in [1, 6, 1_000] {
            let got: Vec<u128> = read(filters.clone(), limit).await.iter().map(|(k, _)| *k).collect();
            assert_eq!(got, expected, "{filters:?}, {limit} a page");
        }
    }
    // Pruning through the middle of a batch keeps the chunk's newer keys findable.
    let mut removed = 0;
    loop {
        let step = store.prune_usage_step(T0 + 5_500, 1_000_000, 40).await.unwrap();
        removed += step.removed;
        if !step.more {
            break;
        }
    }
    assert!(removed > 0);
    let left = read(vec![(LogField::ApiKey, "key-2".to_string())], 4).await;
    let expected: Vec<u128> = read(Vec::new(), 1_000)
        .await
        .iter()
        .filter(|(_, r)| r.api_key_id.as_deref() == Some("key-2"))
        .map(|(k, _)| *k)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(left.iter().map(|(k, _)| *k).collect::<Vec<_>>(), expected);
    assert!(left.iter().all(|(_, r)| r.at_ms >= T0 + 5_500));
}

async fn pruning(store: Store) {
    store.insert_usage((0..50).map(row).collect(), 0).await.unwrap();
    assert_eq!(store.usage_pruned_before().await.unwrap(), None);
    let mut removed = 0;
    loop {
        let step = store.prune_usage_step(T0 + 30_000, 1_000, 8).await.unwrap();
        removed += step.removed;
        if !step.more {
            break;
        }
    }
    assert_eq!(removed, 30);
    assert_eq!(store.usage_row_count().await.unwrap(), 20);
    assert_eq!(store.usage_pruned_before().await.unwrap(), Some(T0 + 29_001));
    let rollups = store.daily_rollups(T0, T0 + 86_400_000).await.unwrap();
    let requests: u64 = rollups.iter().map(|r| r.totals.requests).sum();
    let errors: u64 = rollups.iter().map(|r| r.totals.errors).sum();
    assert_eq!((requests, errors), (30, 6));
    let log = store
        .request_log(LogQuery {
            from_ms: 0,
            to_ms: T0 * 2,
            before: None,
            filters: vec![(LogField::Tier, "gpu".into())],
            limit: 100,
            max_scan: 1000,
        })
        .await
        .unwrap();
    assert_eq!(log.rows.len(), 10, "pruned rows left the index too");
}

async fn spend(store: Store) {
    store.insert_usage((0..12).map(row).collect(), 0).await.unwrap();
    let mut spent = store.spend_in_month(month_number(T0)).await.unwrap();
    spent.sort_by(|a, b| a.0.cmp(&b.0));
    // Odd rows cost 0.25: keys 1 (rows 1, 7), 0 (rows 3, 9), 2 (rows 5, 11).
    assert_eq!(
        spent,
        vec![("key-0".into(), 0.5), ("key-1".into(), 0.5), ("key-2".into(), 0.5)]
    );
    assert!(store.spend_in_month(month_number(T0) + 1).await.unwrap().is_empty());
}

/// A batch written, then written again (a commit whose outcome the router never learnt,
/// replayed from its disk buffer): every row once, its spend once, and a row of another
/// router already on a row's key does not hide it.
async fn usage_once(store: Store) {
    use std::sync::Arc;
    // Another router's row sits on the key picked for row 1.
    let mut foreign = row(1);
    foreign.router = Some("r2".into());
    foreign.id = Some(99);
    store
        .insert_usage_once(Arc::new(vec![PlacedUsage::new(usage_key(foreign.at_ms, 1), foreign)]))
        .await
        .unwrap();
    let placed: Vec<PlacedUsage> = (0..6)
        .map(|i| {
            let mut row = row(i);
            row.id = Some(1000 + i as u64);
            PlacedUsage::new(usage_key(row.at_ms, i as u32), row)
        })
        .collect();
    let placed = Arc::new(placed);
    assert_eq!(store.insert_usage_once(placed.clone()).await.unwrap(), 6);
    assert_eq!(
        store.insert_usage_once(placed.clone()).await.unwrap(),
        0,
        "written twice"
    );
    assert_eq!(store.usage_row_count().await.unwrap(), 7);
    let mut spent = store.spend_in_month(month_number(T0)).await.unwrap();
    spent.sort_by(|a, b| a.0.cmp(&b.0));
    // Odd rows cost 0.25: row 1 twice (ours and r2's), rows 3 and 5 once.
    assert_eq!(
        spent,
        vec![("key-0".into(), 0.25), ("key-1".into(), 0.5), ("key-2".into(), 0.25)]
    );
    // Two rows alike in everything but their id are two rows.
    let mut twin = placed[2].clone();
    twin.row.id = Some(5000);
    assert_eq!(store.insert_usage_once(Arc::new(vec![twin])).await.unwrap(), 1);
    assert_eq!(store.usage_row_count().await.unwrap(), 8);
}

async fn prices(store: Store) {
    let seeded = store.list_prices().await.unwrap();
    assert_eq!(seeded.len(), usage_default_prices().len());
    let mut price = seeded[0].clone();
    price.input_per_mtok = 42.0;
    store.put_price(price.clone()).await.unwrap();
    assert!(store.list_prices().await.unwrap().contains(&price));
    store.delete_price(&price.model).await.unwrap();
    assert!(matches!(
        store.delete_price(&price.model).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
}

async fn conversations(store: Store) {
    for (id, at) in [("a", 5), ("b", 9), ("c", 1)] {
        store
            .put_conversation(ConversationRecord {
                id: id.into(),
                title: format!("chat {id}"),
                created_at: at,
                updated_at: at,
                messages: vec![serde_json::json!({"role": "user", "content": "hi"})],
                pending_delete: None,
            })
            .await
            .unwrap();
    }
    let ids: Vec<String> = store
        .list_conversations()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec!["b", "a", "c"]);
    assert_eq!(store.get_conversation("a").await.unwrap().messages.len(), 1);
    assert!(matches!(
        store.get_conversation("z").await.unwrap_err(),
        StoreError::NotFound(_)
    ));
}

async fn key_state(store: Store) {
    let state = store.load_key_state().await.unwrap();
    assert_eq!(state.schema_version, Some(auxot::store::tables::SCHEMA_VERSION));
    assert!(state.canary.is_none());
    let key = MasterKey::from_bytes(&[7u8; 32]);
    let canary = key.seal_canary().unwrap();
    store
        .initialize_shared(Some(vec![1, 2, 3]), Some(canary.clone()))
        .await
        .unwrap();
    // A second initialise keeps the first canary and salt.
    let other = MasterKey::from_bytes(&[8u8; 32]).seal_canary().unwrap();
    store.initialize_shared(Some(vec![9]), Some(other)).await.unwrap();
    let state = store.load_key_state().await.unwrap();
    assert_eq!(state.kdf_salt, Some(vec![1, 2, 3]));
    assert!(key.check_canary(&state.canary.unwrap()).is_ok());
}

/// PostgreSQL only: routers share the database, so two of them racing must behave like one.
mod shared_database {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_routers_starting_at_once_migrate_once_and_agree() {
        let Some(url) = fresh_database().await else { return };
        let (a, b) = tokio::join!(Store::connect_postgres(&url), Store::connect_postgres(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        let (x, y) = tokio::join!(a.initialize_shared(None, None), b.initialize_shared(None, None));
        x.unwrap();
        y.unwrap();
        assert_eq!(a.list_aliases().await.unwrap().len(), 1, "auto seeded once");
        assert_eq!(b.list_prices().await.unwrap().len(), usage_default_prices().len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_5_database_gets_its_request_log_index_rebuilt_on_start() {
        let Some(url) = fresh_database().await else { return };
        let store = Store::connect_postgres(&url).await.unwrap();
        store.initialize_shared(None, None).await.unwrap();
        // More rows than one step of the rebuild sends at once.
        let rows: Vec<UsageRecord> = (0..10_000).map(|i| row(i / 4)).collect();
        store.insert_usage(rows, 0).await.unwrap();
        // Back to what schema 5 left: the old index's entries, no chunks.
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(
                "DELETE FROM auxot_usage_postings;
                 INSERT INTO auxot_usage_index (k, v) VALUES ('\\x7469657200ff', '');
                 UPDATE auxot_meta SET v = '\\x00000005' WHERE k = 'schema_version'::bytea;",
            )
            .await
            .unwrap();
        store.initialize_shared(None, None).await.unwrap();
        let state = store.load_key_state().await.unwrap();
        assert_eq!(state.schema_version, Some(auxot::store::tables::SCHEMA_VERSION));
        let count = |table: &'static str| {
            let client = &client;
            async move {
                let row = client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .unwrap();
                row.get::<_, i64>(0)
            }
        };
        assert_eq!(count("auxot_usage_index").await, 0, "the old index is emptied");
        assert!(count("auxot_usage_postings").await > 0);
        let page = store
            .request_log(LogQuery {
                from_ms: T0,
                to_ms: T0 + 10_000_000,
                before: None,
                filters: vec![(LogField::Session, "s-7".into())],
                limit: 100,
                max_scan: 1_000,
            })
            .await
            .unwrap();
        // Rows 70..80 of `row`, four times each.
        assert_eq!(page.rows.len(), 40);
        assert!(page.rows.iter().all(|(_, r)| r.session.as_deref() == Some("s-7")));
        assert!(page.rows.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
        drop(client);
        let _ = driver.await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_raced_from_two_routers_is_taken_once() {
        let Some(url) = fresh_database().await else { return };
        let a = Store::connect_postgres(&url).await.unwrap();
        let b = Store::connect_postgres(&url).await.unwrap();
        a.initialize_shared(None, None).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store.insert_api_key(api_key(&format!("k{i}"), "same name")).await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => won += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(b.list_api_keys().await.unwrap().len(), 1);
    }
}

fn presence_row(worker_id: &str, name: &str) -> WorkerPresence {
    WorkerPresence {
        worker_id: worker_id.into(),
        instance_id: Some(format!("{name}-process")),
        token_id: "t1".into(),
        kind: WorkerKind::Gpu,
        name: name.into(),
        version: "1".into(),
        models: vec!["m".into()],
        embedding_models: Vec::new(),
        slots_total: 2,
        slots_in_use: 1,
        slots_in_use_here: 1,
        jobs_served: 3,
        connected_at: "2026-11-30T07:00:00Z".into(),
        last_heartbeat: "2026-11-30T07:00:01Z".into(),
        status: "idle".into(),
        links: vec![PresenceLink {
            url: "http://a".into(),
            connected: true,
        }],
    }
}

async fn presence(store: Store) {
    let fresh = std::time::Duration::from_secs(7);
    let two = [presence_row("w1", "gpu-1"), presence_row("w2", "gpu-2")];
    store.publish_presence("r1", "router-1", &two, None).await.unwrap();
    let seen = store.fleet_presence("r2", fresh).await.unwrap();
    if !store.shares_presence() {
        // One router on redb: its own workers are the whole list.
        assert!(seen.is_empty());
        return;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].router.as_str(), seen[0].router_instance.as_str()),
        ("router-1", "r1")
    );
    assert_eq!(seen[0].worker, two[0]);
    assert!(
        store.fleet_presence("r1", fresh).await.unwrap().is_empty(),
        "a router's own rows are left out"
    );
    // A router's next write replaces its rows: a worker gone is gone.
    store.publish_presence("r1", "router-1", &two[1..], None).await.unwrap();
    let seen = store.fleet_presence("r2", fresh).await.unwrap();
    assert_eq!(
        seen.iter().map(|r| r.worker.worker_id.as_str()).collect::<Vec<_>>(),
        ["w2"]
    );
    // Rows not refreshed within the window are left out, and pruned by the next router.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(store
        .fleet_presence("r2", std::time::Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
    store
        .publish_presence(
            "r3",
            "router-3",
            &[presence_row("w9", "gpu-9")],
            Some(std::time::Duration::ZERO),
        )
        .await
        .unwrap();
    let seen = store.fleet_presence("r2", fresh).await.unwrap();
    assert_eq!(
        seen.iter().map(|r| r.router.as_str()).collect::<Vec<_>>(),
        ["router-3"],
        "r1's stale rows were pruned"
    );
    store.withdraw_presence("r3").await.unwrap();
    assert!(store.fleet_presence("r2", fresh).await.unwrap().is_empty());
}
