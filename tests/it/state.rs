//! The state table, the lock and resumable operations, against the local AWS emulator
//! (`scripts/dev-env.sh up`): races of real processes for the lock, a holder killed with
//! SIGKILL, a crash after every journal phase followed by a resume, and state items the
//! installer must refuse to read or overwrite. What the table holds is read back through
//! DynamoDB's own API; what a user sees, from the binary's streams.
//!
//! The crash tests need the `fault-injection` feature (the suite runs with `--all-features`):
//! `STACKWRIGHT_FAULT_PHASE` then makes the binary abort right after journalling that phase.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use stackwright::aws::DynamoStateStore;
use stackwright::state::{Holder, Lease, OperationKind, StateError, StateStore, StateWrite};

use crate::common::moto::{Cloud, Instance, Outcome, unique_name};

const CONFIG: &str = r#"schema_version = 1
[instance]
name = "{name}"
domain = "{domain}"
region = "us-east-1"
certificate_arn = "{certificate_arn}"
[network]
mode = "public"
vpc_cidr = "10.81.0.0/16"
availability_zones = 2
[control_plane]
url = "https://control.example.com"
"#;

const LEASE: &str = "STACKWRIGHT_LOCK_LEASE_SECONDS";
const FAULT_PHASE: &str = "STACKWRIGHT_FAULT_PHASE";
const FAULT_ACTION: &str = "STACKWRIGHT_FAULT_ACTION";

// --- Helpers --------------------------------------------------------------------------------

/// The release to name: a version, verified in the example repository.
fn release_arg(version: &str) -> String {
    version.to_owned()
}

fn table_name(instance: &Instance) -> String {
    format!("stackwright-{}", instance.name)
}

type Item = HashMap<String, AttributeValue>;

fn key(instance: &Instance, sort_key: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(instance.name.clone())),
        ("sk".to_owned(), AttributeValue::S(sort_key.to_owned())),
    ])
}

/// The item as DynamoDB holds it; `None` also while the table does not exist.
fn item(cloud: &Cloud, instance: &Instance, sort_key: &str) -> Option<Item> {
    if !table_exists(cloud, instance) {
        return None;
    }
    cloud
        .block_on(
            cloud
                .dynamodb
                .get_item()
                .table_name(table_name(instance))
                .set_key(Some(key(instance, sort_key)))
                .consistent_read(true)
                .send(),
        )
        .expect("GetItem")
        .item
}

fn put(cloud: &Cloud, instance: &Instance, sort_key: &str, version: &str, body: &str) {
    let mut item = key(instance, sort_key);
    item.insert("schema_version".into(), AttributeValue::N(version.into()));
    item.insert("body".into(), AttributeValue::S(body.into()));
    cloud
        .block_on(
            cloud
                .dynamodb
                .put_item()
                .table_name(table_name(instance))
                .set_item(Some(item))
                .send(),
        )
        .expect("PutItem");
}

fn restore(cloud: &Cloud, instance: &Instance, sort_key: &str, original: Option<Item>) {
    let table = table_name(instance);
    match original {
        Some(item) => {
            cloud
                .block_on(
                    cloud
                        .dynamodb
                        .put_item()
                        .table_name(table)
                        .set_item(Some(item))
                        .send(),
                )
                .expect("the item is restored");
        }
        None => {
            cloud
                .block_on(
                    cloud
                        .dynamodb
                        .delete_item()
                        .table_name(table)
                        .set_key(Some(key(instance, sort_key)))
                        .send(),
                )
                .expect("the planted item is deleted");
        }
    }
}

fn string(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The lock's ID and fencing token while someone holds it.
fn holder(cloud: &Cloud, instance: &Instance) -> Option<(String, u64)> {
    let lock = item(cloud, instance, "lock")?;
    Some((string(&lock, "lock_id")?, number(&lock, "fencing_token")?))
}

/// How many times the lock was ever acquired: the fencing token counts them.
fn acquisitions(cloud: &Cloud, instance: &Instance) -> u64 {
    item(cloud, instance, "lock")
        .and_then(|lock| number(&lock, "fencing_token"))
        .unwrap_or(0)
}

/// The phases the journal records as done, once it exists.
fn journalled(cloud: &Cloud, instance: &Instance) -> Option<Vec<String>> {
    let journal = item(cloud, instance, "journal")?;
    let body: serde_json::Value =
        serde_json::from_str(&string(&journal, "body")?).expect("the journal is JSON");
    Some(
        body["completed"]
            .as_array()?
            .iter()
            .filter_map(|phase| phase.as_str().map(str::to_owned))
            .collect(),
    )
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child, args: &str) -> Outcome {
    let output = child.wait_with_output().expect("the run ends");
    Outcome {
        args: args.to_owned(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn table_exists(cloud: &Cloud, instance: &Instance) -> bool {
    match cloud.block_on(
        cloud
            .dynamodb
            .describe_table()
            .table_name(table_name(instance))
            .send(),
    ) {
        Ok(_) => true,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|error| error.is_resource_not_found_exception()) =>
        {
            false
        }
        Err(error) => panic!("DescribeTable: {error:?}"),
    }
}

/// What a user and the cloud see of an instance, with what differs between two instances
/// (names, ids, times, durations, the configuration's hash) taken out: the stacks with their
/// status, outputs and resources; the installation record, lock and unfinished operation as
/// `status --output json` shows them; the history as `history --output json` shows it.
fn observed(cloud: &Cloud, instance: &Instance) -> serde_json::Value {
    let mut stacks = serde_json::Map::new();
    let mut names = instance.stacks();
    names.push(instance.stack("identity"));
    for name in names {
        let Some(stack) = cloud.stack(&name) else {
            continue;
        };
        let mut outputs: Vec<String> = stack
            .outputs()
            .iter()
            .filter_map(|output| output.output_key().map(str::to_owned))
            .collect();
        outputs.sort();
        let resources = cloud
            .block_on(
                cloud
                    .cloudformation
                    .list_stack_resources()
                    .stack_name(&name)
                    .send(),
            )
            .expect("ListStackResources");
        let mut resources: Vec<String> = resources
            .stack_resource_summaries()
            .iter()
            .map(|resource| {
                format!(
                    "{} {} {}",
                    resource.logical_resource_id().unwrap_or_default(),
                    resource.resource_type().unwrap_or_default(),
                    resource
                        .resource_status()
                        .map(|status| status.as_str())
                        .unwrap_or_default()
                )
            })
            .collect();
        resources.sort();
        stacks.insert(
            name.replace(&instance.name, "[INSTANCE]"),
            serde_json::json!({
                "status": stack.stack_status().map(|status| status.as_str()),
                "outputs": outputs,
                "resources": resources,
            }),
        );
    }
    let mut state = serde_json::json!(null);
    let mut history = serde_json::json!(null);
    if table_exists(cloud, instance) {
        let status = instance
            .stackwright(&["status", "--output", "json"])
            .without_yes()
            .run()
            .succeeded();
        let mut document: serde_json::Value =
            serde_json::from_str(&status.stdout).expect("status prints JSON");
        if let Some(installation) = document["installation"].as_object_mut() {
            for varying in ["operation_id", "updated_at", "config_hash"] {
                installation.remove(varying);
            }
        }
        state = serde_json::json!({
            "installation": document["installation"],
            "lock": document["lock"],
            "unfinished_operation": document["unfinished_operation"],
        });
        let listed = instance
            .stackwright(&["history", "--output", "json"])
            .without_yes()
            .run()
            .succeeded();
        let mut document: serde_json::Value =
            serde_json::from_str(&listed.stdout).expect("history prints JSON");
        for entry in document["operations"]
            .as_array_mut()
            .expect("a list of operations")
        {
            let entry = entry.as_object_mut().expect("an operation is an object");
            for varying in [
                "operation_id",
                "started_at",
                "finished_at",
                "duration_seconds",
            ] {
                assert!(
                    entry.remove(varying).is_some(),
                    "history entries carry {varying}"
                );
            }
        }
        history = document["operations"].clone();
    }
    let text =
        serde_json::json!({ "stacks": stacks, "state": state, "history": history }).to_string();
    serde_json::from_str(&text.replace(&instance.name, "[INSTANCE]")).expect("JSON")
}

// --- 1. Races: one holder at a time ------------------------------------------------------------

#[test]
fn sixteen_installs_started_at_once_one_proceeds_and_fifteen_exit_3_naming_it() {
    const ROUNDS: usize = 5;
    const RUNS: usize = 16;
    let cloud = Cloud::connect();
    let release = release_arg("1.0.0");
    for round in 1..=ROUNDS {
        // A fresh instance per round: its table does not exist yet, so the runs also race to
        // create it.
        let instance = Instance::new("race", CONFIG);
        let started = Instant::now();
        // The winner pauses after its plan, still holding the lock, so that every other run
        // meets the lock held however the processes are scheduled: a run that came after the
        // winner finished would find nothing to change, which is not the race under test.
        let children: Vec<(u32, Child)> = (0..RUNS)
            .map(|_| {
                let child = instance
                    .stackwright(&["install", "--release", &release])
                    .env(FAULT_PHASE, "plan")
                    .env(FAULT_ACTION, "sleep:2000")
                    .spawn();
                (child.id(), child)
            })
            .collect();
        let outcomes: Vec<(u32, Outcome)> = children
            .into_iter()
            .map(|(pid, child)| (pid, finish(child, "install")))
            .collect();
        let elapsed = started.elapsed();
        let transcripts = || {
            outcomes
                .iter()
                .map(|(pid, outcome)| format!("pid {pid}: {}", outcome.transcript()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let winners: Vec<&(u32, Outcome)> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.code == 0)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: winners\n{}",
            transcripts()
        );
        let (winner, won) = winners[0];
        assert!(
            won.stdout.contains(&format!("Installed {}", instance.name)),
            "{}",
            won.transcript()
        );
        let mut lock_ids = std::collections::BTreeSet::new();
        for (pid, outcome) in outcomes.iter().filter(|(pid, _)| pid != winner) {
            assert_eq!(
                outcome.code,
                3,
                "round {round}, pid {pid}:\n{}",
                outcome.transcript()
            );
            let stderr = &outcome.stderr;
            assert!(
                stderr.contains(&format!(
                    "error: {} is locked by arn:aws:sts::123456789012:user/moto on ",
                    instance.name
                )) && stderr.contains(&format!("(pid {winner}, stackwright "))
                    && stderr.contains("running install since"),
                "round {round}: pid {pid} does not name the holder {winner}:\n{stderr}"
            );
            let lock_id = stderr
                .split("lock ID ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("the lock ID is named");
            assert!(
                stderr.contains(&format!("hint: wait for that run to finish (or pass --wait SECONDS to wait for it); if you are sure the holder is gone, break the lock with `stackwright unlock --force {lock_id}`")),
                "{stderr}"
            );
            lock_ids.insert(lock_id.to_owned());
        }
        assert_eq!(
            lock_ids.len(),
            1,
            "round {round}: the losers name one lock: {lock_ids:?}"
        );
        // Never two holders: the lock was acquired once in the whole round, one operation is
        // recorded, and the lock is free again.
        assert_eq!(
            acquisitions(&cloud, &instance),
            1,
            "round {round}: acquisitions"
        );
        assert_eq!(
            holder(&cloud, &instance),
            None,
            "round {round}: the lock is released"
        );
        let history = instance
            .stackwright(&["history", "--output", "json"])
            .without_yes()
            .run()
            .succeeded();
        let history: serde_json::Value = serde_json::from_str(&history.stdout).expect("JSON");
        let operations = history["operations"].as_array().expect("operations");
        assert_eq!(operations.len(), 1, "round {round}: {history}");
        assert_eq!(operations[0]["result"], "succeeded");
        eprintln!(
            "race round {round}/{ROUNDS}: {RUNS} processes, 1 winner (pid {winner}), {} refused with exit 3, in {:.2} s",
            RUNS - 1,
            elapsed.as_secs_f64()
        );
    }
}

fn store_holder(name: &str) -> Holder {
    Holder {
        owner: name.to_owned(),
        operation: OperationKind::Install,
        host: "test".into(),
        pid: 1,
        installer_version: "test".into(),
    }
}

#[test]
fn the_store_grants_the_lock_to_exactly_one_of_many_concurrent_acquirers_and_counts_every_acquisition()
 {
    const ROUNDS: u64 = 20;
    const ACQUIRERS: usize = 32;
    let cloud = Cloud::connect();
    let name = unique_name("lockrace");
    let store = DynamoStateStore::from_client(cloud.dynamodb.clone(), &name);
    cloud
        .block_on(store.prepare())
        .expect("the table is created");
    let started = Instant::now();
    for round in 1..=ROUNDS {
        let now = jiff::Timestamp::now();
        let holders: Vec<Holder> = (0..ACQUIRERS)
            .map(|index| store_holder(&format!("racer-{index}")))
            .collect();
        let attempts = holders.iter().enumerate().map(|(index, holder)| {
            let store = &store;
            async move {
                store
                    .acquire(
                        holder,
                        &format!("lock-{round}-{index}"),
                        now,
                        Duration::from_secs(60),
                    )
                    .await
            }
        });
        let results = cloud.block_on(futures_util::future::join_all(attempts));
        let winners: Vec<&Lease> = results
            .iter()
            .filter_map(|result| result.as_ref().ok())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0];
        assert_eq!(
            winner.fencing_token, round,
            "the token grows by one per acquisition"
        );
        for result in &results {
            match result {
                Ok(_) => {}
                Err(StateError::LockHeld { holder, .. }) => {
                    assert_eq!(holder.lock_id, winner.lock_id)
                }
                Err(other) => panic!("round {round}: {other:?}"),
            }
        }
        cloud.block_on(store.release(winner)).expect("released");
    }
    eprintln!(
        "store race: {ROUNDS} rounds of {ACQUIRERS} concurrent acquirers, one winner each, in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    cloud
        .block_on(store.destroy())
        .expect("the table is deleted");
}

#[test]
fn a_lease_is_free_for_the_taking_once_expired_and_the_old_token_then_writes_nothing() {
    // Time is a parameter of the store: the lease's expiry is tested without waiting.
    let cloud = Cloud::connect();
    let name = unique_name("lease");
    let store = DynamoStateStore::from_client(cloud.dynamodb.clone(), &name);
    cloud
        .block_on(store.prepare())
        .expect("the table is created");
    let start = jiff::Timestamp::now();
    let at = |millis: i64| start + jiff::SignedDuration::from_millis(millis);
    let lease = Duration::from_secs(10);
    let first = cloud
        .block_on(store.acquire(&store_holder("first"), "first", at(0), lease))
        .expect("the free lock is taken");
    let held = cloud.block_on(store.acquire(&store_holder("second"), "second", at(9_000), lease));
    assert!(
        matches!(&held, Err(StateError::LockHeld { holder, .. }) if holder.lock_id == "first" && holder.holder.owner == "first"),
        "{held:?}"
    );
    // The holder writes while its lease is live, and not after it expired, even unchallenged.
    cloud
        .block_on(store.write(&first, at(9_000), vec![StateWrite::ClearJournal]))
        .expect("a live holder writes");
    let late = cloud.block_on(store.write(&first, at(10_001), vec![StateWrite::ClearJournal]));
    assert!(
        matches!(late, Err(StateError::LeaseLost { .. })),
        "{late:?}"
    );
    let second = cloud
        .block_on(store.acquire(&store_holder("second"), "second", at(10_001), lease))
        .expect("an expired lease is taken over");
    assert_eq!(second.fencing_token, first.fencing_token + 1);
    for (what, result) in [
        (
            "write",
            cloud.block_on(store.write(&first, at(10_002), vec![StateWrite::ClearJournal])),
        ),
        (
            "renew",
            cloud
                .block_on(store.renew(&first, at(10_002), lease))
                .map(drop),
        ),
        ("release", cloud.block_on(store.release(&first))),
    ] {
        assert!(
            matches!(result, Err(StateError::LeaseLost { .. })),
            "{what}: {result:?}"
        );
    }
    let current = cloud.block_on(store.lock()).expect("reads").expect("held");
    assert_eq!(
        current.lock_id, "second",
        "the stale holder's calls changed nothing"
    );
    cloud.block_on(store.release(&second)).expect("released");
    cloud
        .block_on(store.destroy())
        .expect("the table is deleted");
}

// --- 2. A holder killed with SIGKILL -----------------------------------------------------------

/// Starts an install that pauses after journalling its plan, and returns it once it holds the
/// lock, with the lock's ID and token.
fn paused_holder(
    cloud: &Cloud,
    instance: &Instance,
    lease_seconds: Option<&str>,
) -> (Child, String, u64) {
    let release = release_arg("1.0.0");
    let mut run = instance
        .stackwright(&["install", "--release", &release])
        .env(FAULT_PHASE, "plan")
        .env(FAULT_ACTION, "sleep:60000");
    if let Some(seconds) = lease_seconds {
        run = run.env(LEASE, seconds);
    }
    let child = run.spawn();
    wait_until(
        "the install journals its plan",
        Duration::from_secs(30),
        || journalled(cloud, instance).is_some_and(|phases| phases == ["plan"]),
    );
    let (lock_id, token) = holder(cloud, instance).expect("the install holds the lock");
    (child, lock_id, token)
}

#[test]
fn a_killed_holder_blocks_until_its_lease_expires_and_its_token_is_refused_afterwards() {
    let instance = Instance::new("sigkill", CONFIG);
    let cloud = Cloud::connect();
    let release = release_arg("1.0.0");
    let (mut child, lock_id, token) = paused_holder(&cloud, &instance, Some("3"));
    let pid = child.id();
    child.kill().expect("SIGKILL");
    let killed = Instant::now();
    let status = child.wait().expect("the holder is reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // The lease is live: a new run is refused, naming the dead holder.
    let refused = instance
        .stackwright(&["install", "--release", &release])
        .env(LEASE, "3")
        .run()
        .exited(3);
    let refused_after = killed.elapsed();
    assert!(
        refused.stderr.contains(&format!("(pid {pid}, ")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!("lock ID {lock_id}")),
        "{}",
        refused.stderr
    );
    assert_eq!(
        holder(&cloud, &instance),
        Some((lock_id.clone(), token)),
        "the lock is untouched"
    );

    // A run that waits takes the lock once the lease expires, and resumes the dead holder's
    // install from its journal.
    let waiting = Instant::now();
    let resumed = instance
        .stackwright(&["install", "--release", &release, "--wait", "30"])
        .env(LEASE, "3")
        .run()
        .succeeded();
    let waited = waiting.elapsed();
    assert!(
        resumed.stderr.contains("Waiting up to 30 s for the lock"),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains("Resuming the interrupted install")
            && resumed.stderr.contains("(done: plan)"),
        "{}",
        resumed.stderr
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "it waited for the lease to run out"
    );
    assert_eq!(acquisitions(&cloud, &instance), token + 1);
    assert_eq!(holder(&cloud, &instance), None, "released after success");

    // The dead holder comes back with its old lease: every write is refused.
    let store = DynamoStateStore::from_client(cloud.dynamodb.clone(), &instance.name);
    let now = jiff::Timestamp::now();
    let stale = Lease {
        lock_id: lock_id.clone(),
        fencing_token: token,
        holder: store_holder("the killed holder"),
        created_at: now,
        expires_at: now + jiff::SignedDuration::from_hours(1),
    };
    let before = item(&cloud, &instance, "installation");
    let installation = cloud
        .block_on(store.installation())
        .expect("reads")
        .expect("the install recorded the installation");
    let written = cloud.block_on(store.write(
        &stale,
        now,
        vec![StateWrite::Installation(installation.clone())],
    ));
    assert!(
        matches!(written, Err(StateError::LeaseLost { .. })),
        "{written:?}"
    );
    // Also while a new holder has the lock, whose own writes go through.
    let current = cloud
        .block_on(store.acquire(&store_holder("new"), "new", now, Duration::from_secs(60)))
        .expect("the lock is free");
    assert_eq!(current.fencing_token, token + 2);
    let written =
        cloud.block_on(store.write(&stale, now, vec![StateWrite::Installation(installation)]));
    assert!(
        matches!(written, Err(StateError::LeaseLost { .. })),
        "{written:?}"
    );
    assert_eq!(
        item(&cloud, &instance, "installation"),
        before,
        "the stale writes changed nothing"
    );
    cloud
        .block_on(store.write(
            &current,
            jiff::Timestamp::now(),
            vec![StateWrite::ClearJournal],
        ))
        .expect("the current holder writes");
    cloud.block_on(store.release(&current)).expect("released");
    eprintln!(
        "SIGKILL: refused with exit 3 {:.2} s after the kill; the waiting run took the lock after {:.2} s (lease 3 s)",
        refused_after.as_secs_f64(),
        waited.as_secs_f64()
    );
}

#[test]
fn unlock_shows_the_holder_and_breaks_the_lock_only_with_its_id() {
    let instance = Instance::new("unlock", CONFIG);
    let cloud = Cloud::connect();
    let release = release_arg("1.0.0");
    // The default lease (60 s): without unlock, the next run would wait a minute.
    let (mut child, lock_id, token) = paused_holder(&cloud, &instance, None);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let status = instance
        .stackwright(&["status"])
        .without_yes()
        .run()
        .succeeded();
    assert!(
        status
            .stdout
            .lines()
            .any(|line| line.starts_with("Lock ") && line.contains(&format!("lock ID {lock_id}"))),
        "{}",
        status.stdout
    );
    instance
        .stackwright(&["install", "--release", &release])
        .run()
        .exited(3);
    let without_force = instance.stackwright(&["unlock", &lock_id]).run().exited(64);
    assert!(
        without_force.stderr.contains("--force"),
        "{}",
        without_force.stderr
    );
    let wrong = instance
        .stackwright(&["unlock", "--force", "not-the-id"])
        .run()
        .exited(1);
    assert!(
        wrong.stderr.contains(&format!(
            "error: the lock on {} is held by another lock ID than not-the-id",
            instance.name
        )) && wrong.stderr.contains(&lock_id),
        "{}",
        wrong.stderr
    );
    assert_eq!(
        holder(&cloud, &instance),
        Some((lock_id.clone(), token)),
        "a wrong ID breaks nothing"
    );
    let unconfirmed = instance
        .stackwright(&["unlock", "--force", &lock_id])
        .without_yes()
        .run()
        .exited(1);
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );

    let broken = instance
        .stackwright(&["unlock", "--force", &lock_id])
        .run()
        .succeeded();
    assert!(
        broken.stderr.contains(&format!(
            "The lock on {} is held by arn:aws:sts::123456789012:user/moto",
            instance.name
        )),
        "{}",
        broken.stderr
    );
    assert!(
        broken.stderr.contains("its lease is live"),
        "{}",
        broken.stderr
    );
    assert!(
        broken
            .stdout
            .starts_with(&format!("Broke the lock {lock_id} on {}", instance.name)),
        "{}",
        broken.stdout
    );
    assert_eq!(holder(&cloud, &instance), None, "the lock is free");
    assert_eq!(
        acquisitions(&cloud, &instance),
        token,
        "the token is kept, so the next one is larger"
    );

    // The killed install's journal survived the unlock: the next run resumes it.
    let resumed = instance
        .stackwright(&["install", "--release", &release])
        .run()
        .succeeded();
    assert!(
        resumed.stderr.contains("Resuming the interrupted install"),
        "{}",
        resumed.stderr
    );
    assert_eq!(acquisitions(&cloud, &instance), token + 1);
}

#[test]
fn sigterm_stops_after_the_current_step_releases_the_lock_and_the_next_run_resumes() {
    let instance = Instance::new("sigterm", CONFIG);
    let cloud = Cloud::connect();
    let release = release_arg("1.0.0");
    let child = instance
        .stackwright(&["install", "--release", &release])
        .env(FAULT_PHASE, "plan")
        .env(FAULT_ACTION, "sleep:1500")
        .spawn();
    wait_until(
        "the install journals its plan",
        Duration::from_secs(30),
        || journalled(&cloud, &instance).is_some(),
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let stopped = finish(child, "install");
    assert_eq!(stopped.code, 130, "{}", stopped.transcript());
    assert!(
        stopped.stderr.contains("stopping after the current step"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("error: interrupted by a signal"),
        "{}",
        stopped.stderr
    );
    // The signal came while the plan step was finishing (paused after journalling it): that
    // step ended, and the next one never started.
    assert_eq!(holder(&cloud, &instance), None, "the lock is released");
    assert_eq!(
        journalled(&cloud, &instance),
        Some(vec!["plan".to_owned()]),
        "the journal is kept"
    );
    assert!(
        cloud.stack(&instance.stack("bootstrap")).is_none(),
        "nothing after the step started"
    );

    let resumed = instance
        .stackwright(&["install", "--release", &release])
        .run()
        .succeeded();
    assert!(
        resumed.stderr.contains("Resuming the interrupted install")
            && resumed.stderr.contains("(done: plan)"),
        "{}",
        resumed.stderr
    );
    assert_eq!(
        journalled(&cloud, &instance),
        None,
        "the journal is cleared"
    );
}

// --- 3. Crash after each journal phase, then resume --------------------------------------------

/// Runs `args` with the fault hook aborting after `phase`, and checks that it died there.
fn crash(instance: &Instance, args: &[&str], phase: &str) {
    let crashed = instance
        .stackwright(args)
        .env(LEASE, "1")
        .env(FAULT_PHASE, phase)
        .run();
    assert!(
        crashed.code == -1
            && crashed
                .stderr
                .contains(&format!("fault injection: aborting after {phase}")),
        "the run did not abort after {phase} (the tests need `--all-features`, for the fault-injection feature):\n{}",
        crashed.transcript()
    );
}

fn crash_and_resume_install(phase: &str) {
    let cloud = Cloud::connect();
    let release = release_arg("1.0.0");
    let install = ["install", "--release", release.as_str()];

    let clean = Instance::new("clean", CONFIG);
    clean.install("1.0.0");
    let expected = observed(&cloud, &clean);

    let instance = Instance::new("crash", CONFIG);
    crash(&instance, &install, phase);
    let journal = journalled(&cloud, &instance);
    if phase == "record" {
        assert_eq!(journal, None, "the record phase clears the journal");
    } else {
        assert!(
            journal
                .as_ref()
                .is_some_and(|phases| phases.iter().any(|done| done == phase)),
            "the journal holds {phase}: {journal:?}"
        );
    }
    let resumed = instance
        .stackwright(&[&install[..], &["--wait", "10"]].concat())
        .env(LEASE, "1")
        .run()
        .succeeded();
    if phase == "record" {
        assert!(
            resumed.stdout.starts_with("Nothing to change"),
            "{}",
            resumed.transcript()
        );
    } else {
        assert!(
            resumed.stderr.contains("Resuming the interrupted install"),
            "{}",
            resumed.transcript()
        );
    }
    assert_eq!(
        observed(&cloud, &instance),
        expected,
        "after a crash at {phase} and a resume"
    );
}

fn crash_and_resume_teardown(phase: &str, delete_data: bool) {
    let cloud = Cloud::connect();
    let mut teardown = vec!["teardown"];
    if delete_data {
        teardown.push("--delete-data");
    }

    let clean = Instance::new("clean", CONFIG);
    clean.install("1.0.0");
    clean.stackwright(&teardown).run().succeeded();
    let expected = observed(&cloud, &clean);

    let instance = Instance::new("crash", CONFIG);
    instance.install("1.0.0");
    let data = cloud.outputs(&instance.stack("data"));
    cloud
        .block_on(
            cloud
                .s3
                .put_object()
                .bucket(&data["DataBucketName"])
                .key("workspaces/1.json")
                .body(b"{}".to_vec().into())
                .send(),
        )
        .expect("PutObject");
    crash(&instance, &teardown, phase);
    let resumed = instance
        .stackwright(&[&teardown[..], &["--wait", "10"]].concat())
        .env(LEASE, "1")
        .run()
        .succeeded();
    if phase != "record" {
        assert!(
            resumed.stderr.contains("Resuming the interrupted teardown"),
            "{}",
            resumed.transcript()
        );
    }
    assert_eq!(
        observed(&cloud, &instance),
        expected,
        "after a crash at {phase} and a resume"
    );
    if delete_data {
        assert!(
            !table_exists(&cloud, &instance),
            "the state table went with the instance"
        );
        let bucket = cloud.block_on(
            cloud
                .s3
                .head_bucket()
                .bucket(&data["DataBucketName"])
                .send(),
        );
        assert!(bucket.is_err(), "the data bucket is deleted");
        let table = cloud.block_on(
            cloud
                .dynamodb
                .describe_table()
                .table_name(&data["DataTableName"])
                .send(),
        );
        assert!(table.is_err(), "the data table is deleted");
    } else {
        assert!(
            table_exists(&cloud, &instance),
            "the state table stays with the data"
        );
    }
}

macro_rules! crash_tests {
    ($($name:ident => $body:expr;)*) => {
        $(
            #[test]
            fn $name() {
                $body
            }
        )*
    };
}

crash_tests! {
    an_install_killed_after_its_plan_resumes_to_a_clean_install => crash_and_resume_install("plan");
    an_install_killed_after_the_bootstrap_stack_resumes_to_a_clean_install => crash_and_resume_install("stack:bootstrap");
    an_install_killed_after_the_network_stack_resumes_to_a_clean_install => crash_and_resume_install("stack:network");
    an_install_killed_after_the_data_stack_resumes_to_a_clean_install => crash_and_resume_install("stack:data");
    an_install_killed_after_the_platform_stack_resumes_to_a_clean_install => crash_and_resume_install("stack:platform");
    an_install_killed_after_its_record_resumes_to_a_clean_install => crash_and_resume_install("record");
    a_teardown_killed_after_its_inventory_resumes_to_a_clean_teardown => crash_and_resume_teardown("inventory", true);
    a_teardown_killed_after_the_platform_stack_resumes_to_a_clean_teardown => crash_and_resume_teardown("stack:platform", true);
    a_teardown_killed_after_the_network_stack_resumes_to_a_clean_teardown => crash_and_resume_teardown("stack:network", true);
    a_teardown_killed_after_the_data_stack_resumes_to_a_clean_teardown => crash_and_resume_teardown("stack:data", true);
    a_teardown_killed_after_the_bootstrap_stack_resumes_to_a_clean_teardown => crash_and_resume_teardown("stack:bootstrap", true);
    a_teardown_killed_after_deleting_data_resumes_to_a_clean_teardown => crash_and_resume_teardown("data", true);
    a_teardown_killed_after_its_record_resumes_to_a_clean_teardown => crash_and_resume_teardown("record", true);
    a_teardown_keeping_data_killed_after_its_inventory_resumes_to_the_same_history => crash_and_resume_teardown("inventory", false);
    a_teardown_keeping_data_killed_after_the_network_stack_resumes_to_the_same_history => crash_and_resume_teardown("stack:network", false);
    a_teardown_keeping_data_killed_after_its_record_resumes_to_the_same_history => crash_and_resume_teardown("record", false);
}

#[test]
fn an_unfinished_operation_of_another_kind_is_refused_with_an_explanation() {
    let instance = Instance::new("otherkind", CONFIG);
    let cloud = Cloud::connect();
    instance.install("1.0.0");
    crash(&instance, &["teardown"], "inventory");
    let release = release_arg("1.1.0");
    let refused = instance
        .stackwright(&["install", "--release", &release, "--wait", "10"])
        .env(LEASE, "1")
        .run()
        .exited(1);
    assert!(
        refused.stderr.contains(&format!(
            "error: an interrupted teardown of {} (operation ",
            instance.name
        )) && refused.stderr.contains(
            "is unfinished (done: inventory); `install` cannot start until it is finished"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("hint: run `stackwright teardown` to finish it first"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        journalled(&cloud, &instance),
        Some(vec!["inventory".to_owned()]),
        "the journal is kept"
    );
    assert_eq!(holder(&cloud, &instance), None, "the lock is released");
    let platform = cloud
        .stack(&instance.stack("platform"))
        .expect("the platform stack is untouched");
    assert_eq!(
        platform.stack_status().map(|status| status.as_str()),
        Some("CREATE_COMPLETE")
    );
    let finished = instance.stackwright(&["teardown"]).run().succeeded();
    assert!(
        finished
            .stderr
            .contains("Resuming the interrupted teardown"),
        "{}",
        finished.stderr
    );
}

// --- 4. Items the installer must not read or overwrite -----------------------------------------

#[test]
fn state_items_of_an_unknown_version_or_malformed_are_reported_by_key_and_left_alone() {
    let instance = Instance::new("baditem", CONFIG);
    instance.install("1.0.0");
    let cloud = Cloud::connect();
    let release = release_arg("1.1.0");
    let name = instance.name.clone();
    let stacks_before: Vec<Option<String>> = instance
        .stacks()
        .iter()
        .map(|stack| {
            cloud.stack(stack).and_then(|stack| {
                stack
                    .stack_status()
                    .map(|status| status.as_str().to_owned())
            })
        })
        .collect();

    let cases = [
        (
            "installation",
            "99",
            r#"{"installed_release":"9.0.0","written_by":"a newer stackwright"}"#,
            format!(
                "error: the state item {name}/installation has schema version 99, which this installer does not know"
            ),
            "hint: a newer stackwright wrote it: use that version (or newer); the item was left as it is",
        ),
        (
            "journal",
            "1",
            r#"{"operation_id": 12"#,
            format!("error: the state item {name}/journal is malformed: its body does not parse: "),
            "hint: the item was left as it is; restore it from the table's point-in-time recovery",
        ),
        (
            "lock",
            "99",
            r#"{"owner":"someone newer"}"#,
            format!(
                "error: the state item {name}/lock has schema version 99, which this installer does not know"
            ),
            "hint: a newer stackwright wrote it",
        ),
    ];
    for (sort_key, version, body, error, hint) in cases {
        let original = item(&cloud, &instance, sort_key);
        put(&cloud, &instance, sort_key, version, body);
        let planted = item(&cloud, &instance, sort_key);
        for args in [
            vec!["install", "--release", release.as_str()],
            vec!["teardown", "--delete-data"],
        ] {
            let outcome = instance.stackwright(&args).run().exited(1);
            assert!(
                outcome.stderr.contains(&error),
                "{sort_key}, {}:\n{}",
                args[0],
                outcome.stderr
            );
            assert!(
                outcome.stderr.contains(hint),
                "{sort_key}, {}:\n{}",
                args[0],
                outcome.stderr
            );
            assert_eq!(
                item(&cloud, &instance, sort_key),
                planted,
                "{sort_key} is left as it was by {}",
                args[0]
            );
            if sort_key != "lock" {
                assert_eq!(
                    holder(&cloud, &instance),
                    None,
                    "{} released the lock",
                    args[0]
                );
            }
        }
        let status = instance
            .stackwright(&["status"])
            .without_yes()
            .run()
            .exited(1);
        assert!(
            status.stderr.contains(&error),
            "status, {sort_key}:\n{}",
            status.stderr
        );
        restore(&cloud, &instance, sort_key, original);
    }

    let history_key = "history#2000-01-01T00:00:00.000Z#planted";
    put(&cloud, &instance, history_key, "1", "[]");
    let history = instance
        .stackwright(&["history"])
        .without_yes()
        .run()
        .exited(1);
    assert!(
        history.stderr.contains(&format!(
            "error: the state item {name}/{history_key} is malformed: its body does not parse"
        )),
        "{}",
        history.stderr
    );
    restore(&cloud, &instance, history_key, None);

    let stacks_after: Vec<Option<String>> = instance
        .stacks()
        .iter()
        .map(|stack| {
            cloud.stack(stack).and_then(|stack| {
                stack
                    .stack_status()
                    .map(|status| status.as_str().to_owned())
            })
        })
        .collect();
    assert_eq!(stacks_after, stacks_before, "no stack was touched");
    let listed = instance
        .stackwright(&["history"])
        .without_yes()
        .run()
        .succeeded();
    assert!(
        listed.stdout.starts_with("WHEN ")
            && listed.stdout.lines().count() == 2
            && listed
                .stdout
                .contains("  install  -     1.0.0  succeeded  "),
        "one install in the history, and nothing else:\n{}",
        listed.stdout
    );
}

/// The body of the installation item, as JSON.
fn installation_body(cloud: &Cloud, instance: &Instance) -> serde_json::Value {
    let item = item(cloud, instance, "installation").expect("the installation item");
    serde_json::from_str(&string(&item, "body").expect("a body")).expect("the body is JSON")
}

#[test]
fn a_root_planted_in_the_state_table_is_refused_and_an_older_release_needs_a_typed_downgrade() {
    let instance = Instance::new("planted", CONFIG);
    instance.install("1.1.0");
    let cloud = Cloud::connect();
    let name = instance.name.clone();
    let recorded = installation_body(&cloud, &instance);
    let floor = &recorded["trust_floor"];
    // The timestamp's version grows as the local control plane re-signs it.
    assert!(
        floor["root_version"].as_u64() == Some(1) && floor["timestamp_version"].as_u64() >= Some(2),
        "the install recorded how far it verified: {recorded}"
    );

    // Whoever can write the table (the updater's role can) plants a root of their own, or
    // edits the floor: either is refused, naming the item, and the table is left as it is.
    let keys = tempfile::tempdir().expect("a directory");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime
        .block_on(stackwright::release::signing::generate_keys(
            keys.path(),
            jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
        ))
        .expect("keys");
    let attacker_root = std::fs::read_to_string(keys.path().join("root.json")).expect("root");
    let mut planted_root = recorded.clone();
    planted_root
        .as_object_mut()
        .expect("an object")
        .remove("trust_floor");
    planted_root["trusted_root"] = attacker_root.into();
    let mut edited_floor = recorded.clone();
    edited_floor["trust_floor"]["root_sha256"] = "00".repeat(32).into();
    let original = item(&cloud, &instance, "installation");
    for planted in [planted_root, edited_floor] {
        put(&cloud, &instance, "installation", "1", &planted.to_string());
        let before = item(&cloud, &instance, "installation");
        let refused = instance
            .stackwright(&["install", "--release", "1.1.0"])
            .run()
            .exited(1);
        assert!(
            refused.stderr.contains(&format!(
                "error: the state table stackwright-{name}, item {name}/installation records root version 1 with SHA-256 "
            )) && refused
                .stderr
                .contains("the record was not written by this installer from this repository"),
            "{}",
            refused.transcript()
        );
        assert!(
            refused
                .stderr
                .contains("hint: find out who wrote that item (CloudTrail")
        );
        assert_eq!(
            item(&cloud, &instance, "installation"),
            before,
            "left as it was"
        );
        assert_eq!(holder(&cloud, &instance), None, "the lock is free");
    }
    restore(&cloud, &instance, "installation", original);

    // Going back to an older release is refused, and done only when asked and typed (--yes
    // types it for a script).
    let refused = instance
        .stackwright(&["install", "--release", "1.0.0"])
        .run()
        .exited(1);
    assert!(
        refused.stderr.contains(
            "error: release 1.0.0 is older than release 1.1.0, which is already trusted here: refusing to roll back"
        ) && refused.stderr.contains("--allow-downgrade"),
        "{}",
        refused.transcript()
    );
    assert_eq!(
        installation_body(&cloud, &instance)["installed_release"],
        "1.1.0"
    );
    instance
        .stackwright(&["install", "--release", "1.0.0", "--allow-downgrade"])
        .run()
        .succeeded();
    assert_eq!(
        installation_body(&cloud, &instance)["installed_release"],
        "1.0.0"
    );

    // A manifest file is not a release name.
    let path = crate::common::release("1.0.0");
    let path = path.to_str().expect("UTF-8");
    let refused = instance
        .stackwright(&["install", "--release", path])
        .run()
        .exited(64);
    assert!(
        refused.stderr.contains(&format!(
            "hint: name the release by its version (--release 1.2.0); a manifest file no one signed is read only by development builds: --manifest-file {} --allow-unsigned",
            path.replace(crate::common::REPOSITORY, "[REPOSITORY]")
        )),
        "{}",
        refused.transcript()
    );
}
