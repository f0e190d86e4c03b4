//! Whether to upgrade, to what, and when: a pure function of the installed release, the
//! releases offered, the local policy, the instance's seed and the time, so that every rule is
//! tested table by table without a clock or a network.

use std::collections::BTreeSet;
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use semver::Version;
use serde::Serialize;

use crate::config::MaintenanceWindow;
use crate::release::ReleaseManifest;

/// A release the control plane offers this instance, with what its verified manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfferedRelease {
    pub version: Version,
    pub channel: String,
    /// Marked urgent by the vendor (a security fix): it may start outside the maintenance window.
    pub urgent: bool,
    /// The oldest release this one may be applied on.
    pub minimum_upgrade_from: Option<Version>,
    /// Whether an instance may go past this release without applying it.
    pub skippable: bool,
    pub minimum_installer_version: Version,
}

impl OfferedRelease {
    pub fn from_manifest(manifest: &ReleaseManifest, urgent: bool) -> Self {
        OfferedRelease {
            version: manifest.version.clone(),
            channel: manifest.channel.clone(),
            urgent,
            minimum_upgrade_from: manifest.minimum_upgrade_from.clone(),
            skippable: manifest.skippable,
            minimum_installer_version: manifest.minimum_installer_version.clone(),
        }
    }
}

/// The instance's own rules, from `stackwright.toml` and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradePolicy {
    /// Only releases of this channel are taken.
    pub channel: String,
    /// Never go past this version (`release.pin`).
    pub pin: Option<Version>,
    /// Go exactly to this version (`upgrade --to`), through required releases on the way.
    pub target: Option<Version>,
    /// Unattended upgrades start only inside it; none means any time.
    pub window: Option<MaintenanceWindow>,
    /// Releases that failed here, skipped until an operator clears them.
    pub failed: BTreeSet<Version>,
    /// The version of the running installer.
    pub installer_version: Version,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing newer is offered (or allowed) for this instance.
    UpToDate {
        installed: Version,
        /// Newer releases left aside, with the reason for each.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ignored: Vec<Ignored>,
    },
    /// Upgrade to `next` now; `path` lists every hop to the target, `next` first.
    Upgrade {
        installed: Version,
        next: Version,
        target: Version,
        path: Vec<Version>,
        urgent: bool,
    },
    /// An upgrade is due but the maintenance window is closed.
    Wait {
        installed: Version,
        next: Version,
        target: Version,
        path: Vec<Version>,
        until: Timestamp,
    },
    /// The next hop needs a newer installer, which must run it.
    NeedsInstaller {
        installed: Version,
        next: Version,
        installer: Version,
    },
    /// No allowed path leads forward; a person must act.
    Blocked {
        installed: Version,
        reason: String,
        hint: String,
    },
}

/// A newer release the decision left aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    pub version: Version,
    pub reason: String,
}

/// The longest an instance waits after its window opens, so a fleet sharing a window does not
/// start at the same second: a fixed share of the window, spread by the instance's seed.
const MAX_SPREAD_MINUTES: u64 = 30;

/// Decides what an instance running `installed` does with the releases `offered`.
pub fn decide(
    installed: &Version,
    offered: &[OfferedRelease],
    policy: &UpgradePolicy,
    seed: u64,
    now: Timestamp,
) -> Decision {
    let mut ignored = Vec::new();
    let mut releases: Vec<&OfferedRelease> = Vec::new();
    for release in offered {
        let reason = if release.version <= *installed {
            continue;
        } else if release.channel != policy.channel {
            format!(
                "on channel \"{}\", not \"{}\"",
                release.channel, policy.channel
            )
        } else if policy
            .pin
            .as_ref()
            .is_some_and(|pin| release.version > *pin)
        {
            format!(
                "newer than the pinned version {}",
                policy
                    .pin
                    .as_ref()
                    .map(Version::to_string)
                    .unwrap_or_default()
            )
        } else if policy
            .target
            .as_ref()
            .is_some_and(|target| release.version > *target)
        {
            "newer than the requested version".into()
        } else {
            releases.push(release);
            continue;
        };
        ignored.push(Ignored {
            version: release.version.clone(),
            reason,
        });
    }
    releases.sort_by(|a, b| a.version.cmp(&b.version));
    releases.dedup_by(|a, b| a.version == b.version);

    // The target: the requested version, or the newest release that has not failed here.
    let target = match &policy.target {
        Some(wanted) => match releases.iter().find(|release| release.version == *wanted) {
            Some(release) => *release,
            None => {
                return Decision::Blocked {
                    installed: installed.clone(),
                    reason: format!(
                        "release {wanted} is not offered to this instance on channel \"{}\"",
                        policy.channel
                    ),
                    hint: "choose a version that `stackwright upgrade --check` lists, or ask the vendor to roll it out to this instance".into(),
                };
            }
        },
        None => {
            for release in &releases {
                if policy.failed.contains(&release.version) {
                    ignored.push(Ignored {
                        version: release.version.clone(),
                        reason: "failed here before; skipped until an operator clears it".into(),
                    });
                }
            }
            match releases
                .iter()
                .rev()
                .find(|release| !policy.failed.contains(&release.version))
            {
                Some(release) => *release,
                None => {
                    ignored.sort_by(|a, b| a.version.cmp(&b.version));
                    return Decision::UpToDate {
                        installed: installed.clone(),
                        ignored,
                    };
                }
            }
        }
    };

    let path = match route(installed, target, &releases) {
        Ok(path) => path,
        Err((reason, hint)) => {
            return Decision::Blocked {
                installed: installed.clone(),
                reason,
                hint,
            };
        }
    };
    let next = path[0];
    if let Some(failed) = path
        .iter()
        .find(|release| policy.failed.contains(&release.version))
        && policy.target.as_ref() != Some(&failed.version)
    {
        return Decision::Blocked {
            installed: installed.clone(),
            reason: format!(
                "the way to {} leads through {}, which failed here before",
                target.version, failed.version
            ),
            hint: format!(
                "find why {} failed in `stackwright history`, then retry it with `stackwright upgrade --to {}`",
                failed.version, failed.version
            ),
        };
    }
    if policy.installer_version < next.minimum_installer_version {
        return Decision::NeedsInstaller {
            installed: installed.clone(),
            next: next.version.clone(),
            installer: next.minimum_installer_version.clone(),
        };
    }
    let versions: Vec<Version> = path.iter().map(|release| release.version.clone()).collect();
    let urgent = path.iter().any(|release| release.urgent);
    if let Some(window) = &policy.window
        && !urgent
    {
        let opening = window.next_opening(now);
        let spread = spread_minutes(seed, window.minutes());
        let start = if window.contains(now) {
            // Inside the window: this instance's turn comes `spread` minutes after it opened.
            let opened = opened_at(window, now);
            opened + SignedDuration::from_mins(spread as i64)
        } else {
            opening + SignedDuration::from_mins(spread as i64)
        };
        if now < start {
            return Decision::Wait {
                installed: installed.clone(),
                next: next.version.clone(),
                target: target.version.clone(),
                path: versions,
                until: start,
            };
        }
    }
    Decision::Upgrade {
        installed: installed.clone(),
        next: next.version.clone(),
        target: target.version.clone(),
        path: versions,
        urgent,
    }
}

/// The hops from `installed` to `target`, each the furthest release that may be applied on the
/// previous one without passing a release that may not be skipped.
fn route<'a>(
    installed: &Version,
    target: &'a OfferedRelease,
    releases: &[&'a OfferedRelease],
) -> Result<Vec<&'a OfferedRelease>, (String, String)> {
    let mut path = Vec::new();
    let mut current = installed.clone();
    while current < target.version {
        let candidates = releases
            .iter()
            .filter(|release| release.version > current && release.version <= target.version);
        let mut hop = None;
        for release in candidates {
            let applies = release
                .minimum_upgrade_from
                .as_ref()
                .is_none_or(|minimum| current >= *minimum);
            if applies {
                hop = Some(*release);
            }
            // Nothing past a release that may not be skipped.
            if !release.skippable {
                break;
            }
        }
        let Some(hop) = hop else {
            let first = releases
                .iter()
                .find(|release| release.version > current)
                .map_or(target, |release| *release);
            let minimum = first
                .minimum_upgrade_from
                .as_ref()
                .map_or_else(String::new, Version::to_string);
            return Err((
                format!(
                    "release {} must be applied on {minimum} or later, and no offered release leads from {current} to it",
                    first.version
                ),
                format!(
                    "ask the vendor to offer a release between {current} and {minimum} to this instance"
                ),
            ));
        };
        current = hop.version.clone();
        path.push(hop);
    }
    Ok(path)
}

/// Minutes after the window opens at which this instance starts.
fn spread_minutes(seed: u64, window_minutes: u32) -> u64 {
    let spread = MAX_SPREAD_MINUTES.min(u64::from(window_minutes) / 4).max(1);
    seed % spread
}

/// When the window that contains `now` opened.
fn opened_at(window: &MaintenanceWindow, now: Timestamp) -> Timestamp {
    // Walk back minute by minute at most one window's length: windows are at most a day.
    let mut opened = now - SignedDuration::from_secs(now.as_second().rem_euclid(60));
    for _ in 0..window.minutes() {
        let before = opened - SignedDuration::from_mins(1);
        if !window.contains(before) {
            break;
        }
        opened = before;
    }
    opened
}

impl fmt::Display for Decision {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hops = |path: &[Version]| {
            path.iter()
                .map(Version::to_string)
                .collect::<Vec<_>>()
                .join(" → ")
        };
        match self {
            Decision::UpToDate { installed, ignored } => {
                write!(formatter, "Release {installed} is up to date.")?;
                for item in ignored {
                    write!(
                        formatter,
                        "\n  {} is offered but left aside: {}",
                        item.version, item.reason
                    )?;
                }
                Ok(())
            }
            Decision::Upgrade {
                installed,
                path,
                urgent,
                ..
            } => {
                write!(formatter, "Upgrade available: {installed} → {}", hops(path))?;
                if *urgent {
                    write!(formatter, " (urgent)")?;
                }
                Ok(())
            }
            Decision::Wait {
                installed,
                path,
                until,
                ..
            } => write!(
                formatter,
                "Upgrade available: {installed} → {}, waiting for the maintenance window (starts {})",
                hops(path),
                until.strftime("%a %Y-%m-%d %H:%M UTC")
            ),
            Decision::NeedsInstaller {
                installed,
                next,
                installer,
            } => write!(
                formatter,
                "Upgrade available: {installed} → {next}, which needs stackwright {installer} or newer"
            ),
            Decision::Blocked {
                installed, reason, ..
            } => write!(
                formatter,
                "Release {installed} cannot move forward: {reason}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn release(text: &str) -> OfferedRelease {
        OfferedRelease {
            version: version(text),
            channel: "stable".into(),
            urgent: false,
            minimum_upgrade_from: None,
            skippable: true,
            minimum_installer_version: version("0.1.0"),
        }
    }

    fn required(text: &str) -> OfferedRelease {
        OfferedRelease {
            skippable: false,
            ..release(text)
        }
    }

    fn policy() -> UpgradePolicy {
        UpgradePolicy {
            channel: "stable".into(),
            pin: None,
            target: None,
            window: None,
            failed: BTreeSet::new(),
            installer_version: version("0.1.0"),
        }
    }

    // A Wednesday at noon.
    fn noon() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn decide_at(installed: &str, offered: &[OfferedRelease], policy: &UpgradePolicy) -> Decision {
        decide(&version(installed), offered, policy, 7, noon())
    }

    /// The path of an `Upgrade`, or the decision's kind.
    fn outcome(decision: &Decision) -> String {
        match decision {
            Decision::Upgrade { path, .. } => path
                .iter()
                .map(Version::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            Decision::UpToDate { .. } => "up to date".into(),
            Decision::Wait { .. } => "wait".into(),
            Decision::NeedsInstaller { installer, .. } => format!("needs installer {installer}"),
            Decision::Blocked { .. } => "blocked".into(),
        }
    }

    #[test]
    fn forward_only_to_the_newest_allowed_release() {
        let with_pin = UpgradePolicy {
            pin: Some(version("1.1.0")),
            ..policy()
        };
        let default = policy();
        let other_channel = OfferedRelease {
            channel: "beta".into(),
            ..release("1.3.0")
        };
        let cases: Vec<(&str, Vec<OfferedRelease>, &UpgradePolicy, &str)> = vec![
            ("1.0.0", vec![], &default, "up to date"),
            ("1.0.0", vec![release("1.1.0")], &default, "1.1.0"),
            ("1.1.0", vec![release("1.0.0")], &default, "up to date"),
            ("1.1.0", vec![release("1.1.0")], &default, "up to date"),
            (
                "1.0.0",
                vec![release("1.2.0"), release("1.1.0")],
                &default,
                "1.2.0",
            ),
            (
                "1.0.0",
                vec![release("1.1.0"), release("1.2.0")],
                &with_pin,
                "1.1.0",
            ),
            ("1.0.0", vec![other_channel.clone()], &default, "up to date"),
            (
                "1.0.0",
                vec![release("1.1.0"), other_channel],
                &default,
                "1.1.0",
            ),
        ];
        for (installed, offered, policy, expected) in cases {
            let decision = decide_at(installed, &offered, policy);
            assert_eq!(
                outcome(&decision),
                expected,
                "{installed} offered {offered:?}"
            );
        }
    }

    #[test]
    fn never_past_a_required_release() {
        let cases: Vec<(&str, Vec<OfferedRelease>, &str)> = vec![
            // 1.1.0 may not be skipped: go there first.
            (
                "1.0.0",
                vec![required("1.1.0"), release("1.2.0")],
                "1.1.0 1.2.0",
            ),
            // Two required releases in a row.
            (
                "1.0.0",
                vec![required("1.1.0"), required("1.2.0"), release("1.3.0")],
                "1.1.0 1.2.0 1.3.0",
            ),
            // Skippable ones in between are skipped.
            (
                "1.0.0",
                vec![
                    release("1.0.1"),
                    required("1.1.0"),
                    release("1.1.1"),
                    release("1.2.0"),
                ],
                "1.1.0 1.2.0",
            ),
            // Already past the required release.
            ("1.1.0", vec![required("1.1.0"), release("1.2.0")], "1.2.0"),
        ];
        for (installed, offered, expected) in cases {
            let decision = decide_at(installed, &offered, &policy());
            assert_eq!(
                outcome(&decision),
                expected,
                "{installed} offered {offered:?}"
            );
        }
    }

    #[test]
    fn minimum_upgrade_from_routes_through_an_intermediate_or_blocks() {
        let needs_1_1 = OfferedRelease {
            minimum_upgrade_from: Some(version("1.1.0")),
            ..release("2.0.0")
        };
        let routed = decide_at("1.0.0", &[release("1.1.0"), needs_1_1.clone()], &policy());
        assert_eq!(outcome(&routed), "1.1.0 2.0.0");

        let blocked = decide_at("1.0.0", &[needs_1_1], &policy());
        let Decision::Blocked { reason, hint, .. } = &blocked else {
            panic!("expected blocked, got {blocked:?}");
        };
        assert!(
            reason.contains("2.0.0 must be applied on 1.1.0 or later"),
            "{reason}"
        );
        assert!(hint.contains("between 1.0.0 and 1.1.0"), "{hint}");
    }

    #[test]
    fn failed_versions_are_skipped_until_cleared() {
        let failed = UpgradePolicy {
            failed: [version("1.1.0")].into(),
            ..policy()
        };
        let decision = decide_at("1.0.0", &[release("1.1.0")], &failed);
        let Decision::UpToDate { ignored, .. } = &decision else {
            panic!("expected up to date, got {decision:?}");
        };
        assert!(ignored[0].reason.contains("failed here before"));
        // A newer release that does not need the failed one is taken.
        assert_eq!(
            outcome(&decide_at(
                "1.0.0",
                &[release("1.1.0"), release("1.2.0")],
                &failed
            )),
            "1.2.0"
        );
        // A required release that failed blocks everything behind it.
        assert_eq!(
            outcome(&decide_at(
                "1.0.0",
                &[required("1.1.0"), release("1.2.0")],
                &failed
            )),
            "blocked"
        );
        // An operator asking for it explicitly retries it.
        let retry = UpgradePolicy {
            target: Some(version("1.1.0")),
            ..failed
        };
        assert_eq!(
            outcome(&decide_at("1.0.0", &[release("1.1.0")], &retry)),
            "1.1.0"
        );
    }

    #[test]
    fn requested_version_is_reached_through_required_releases() {
        let to = |text: &str| UpgradePolicy {
            target: Some(version(text)),
            ..policy()
        };
        let offered = [required("1.1.0"), release("1.2.0"), release("1.3.0")];
        assert_eq!(
            outcome(&decide_at("1.0.0", &offered, &to("1.2.0"))),
            "1.1.0 1.2.0"
        );
        assert_eq!(
            outcome(&decide_at("1.0.0", &offered, &to("1.4.0"))),
            "blocked"
        );
    }

    #[test]
    fn maintenance_window_waits_unless_urgent() {
        let weekend = UpgradePolicy {
            window: Some("sat,sun 02:00-05:00".parse().unwrap()),
            ..policy()
        };
        let decision = decide_at("1.0.0", &[release("1.1.0")], &weekend);
        let Decision::Wait { until, .. } = &decision else {
            panic!("expected wait, got {decision:?}");
        };
        // Saturday 02:00 plus this instance's spread (seed 7 → 7 minutes).
        assert_eq!(*until, "2026-11-28T02:07:00Z".parse::<Timestamp>().unwrap());

        let urgent = OfferedRelease {
            urgent: true,
            ..release("1.1.0")
        };
        let decision = decide_at("1.0.0", &[urgent], &weekend);
        assert!(
            matches!(decision, Decision::Upgrade { urgent: true, .. }),
            "{decision:?}"
        );

        // Inside the window, after this instance's turn.
        let saturday = "2026-11-28T02:30:00Z".parse().unwrap();
        let decision = decide(
            &version("1.0.0"),
            &[release("1.1.0")],
            &weekend,
            7,
            saturday,
        );
        assert_eq!(outcome(&decision), "1.1.0");
        // Inside the window, before this instance's turn.
        let early = "2026-11-28T02:03:00Z".parse().unwrap();
        let decision = decide(&version("1.0.0"), &[release("1.1.0")], &weekend, 7, early);
        assert_eq!(outcome(&decision), "wait");
    }

    #[test]
    fn spread_differs_by_seed_and_stays_inside_the_window() {
        let spreads: BTreeSet<u64> = (0..100).map(|seed| spread_minutes(seed, 180)).collect();
        assert_eq!(spreads.len() as u64, MAX_SPREAD_MINUTES);
        assert!(spreads.iter().all(|minutes| *minutes < 45));
        assert_eq!(spread_minutes(12345, 40), 12345 % 10);
    }

    #[test]
    fn a_release_for_a_newer_installer_says_so() {
        let needs_new = OfferedRelease {
            minimum_installer_version: version("0.2.0"),
            ..release("1.1.0")
        };
        assert_eq!(
            outcome(&decide_at("1.0.0", &[needs_new], &policy())),
            "needs installer 0.2.0"
        );
    }
}
