//! Property tests: any configuration text either is rejected with named problems or renders
//! every stack; nothing panics.

use std::path::Path;

use proptest::prelude::*;
use stackwright::config::{ConfigError, ConfigFile};
use stackwright::release::ReleaseManifest;

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,24}".prop_map(|text| format!("{text:?}")),
        ".{0,12}".prop_map(|text| format!("{text:?}")),
        (0i64..6).prop_map(|number| number.to_string()),
        any::<i64>().prop_map(|number| number.to_string()),
        any::<bool>().prop_map(|flag| flag.to_string()),
        (0u8..=255, 0u8..=255, 0u8..=40)
            .prop_map(|(a, b, prefix)| format!("\"10.{a}.{b}.0/{prefix}\"")),
        prop::sample::select(vec![
            "\"public\"",
            "\"private\"",
            "\"all-private\"",
            "\"hybrid\""
        ])
        .prop_map(str::to_owned),
        Just("[]".to_owned()),
        Just("[\"org:abc/project:*\"]".to_owned()),
    ]
}

/// A configuration close to valid, with any line replaced, dropped or duplicated.
fn configuration() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "name",
        "domain",
        "region",
        "mode",
        "vpc_cidr",
        "availability_zones",
        "public_services",
        "url",
        "channel",
        "schema_version",
        "unknown",
        "subject_patterns",
        "ingress_cidrs",
        "certificate_arn",
        "control_plane_endpoint_service",
    ]);
    (
        prop::sample::select(vec!["public", "private", "all-private"]),
        2u8..=3,
        any::<bool>(),
        prop::collection::vec((keys, value(), 0usize..4), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mode, zones, public_services, edits, identity)| {
            let mut sections: Vec<Vec<String>> = vec![
                vec!["schema_version = 1".into()],
                vec![
                    "[instance]".into(),
                    "name = \"acme-dev\"".into(),
                    "domain = \"cde.acme.example\"".into(),
                    "region = \"us-east-1\"".into(),
                ],
                vec![
                    "[network]".into(),
                    format!("mode = \"{mode}\""),
                    format!("availability_zones = {zones}"),
                    format!(
                        "public_services = {}",
                        public_services && mode == "all-private"
                    ),
                ],
                vec![
                    "[control_plane]".into(),
                    "url = \"https://control.example.com\"".into(),
                ],
            ];
            if identity {
                sections.push(vec![
                    "[identity]".into(),
                    "subject_patterns = [\"org:7f3a/project:*\"]".into(),
                ]);
            }
            for (key, value, section) in edits {
                let last = sections.len() - 1;
                let lines = &mut sections[section.min(last)];
                lines.retain(|line| !line.starts_with(&format!("{key} =")));
                lines.push(format!("{key} = {value}"));
            }
            sections
                .into_iter()
                .map(|lines| lines.join("\n"))
                .collect::<Vec<_>>()
                .join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_configuration_is_rejected_with_a_named_key_or_renders(text in configuration()) {
        let release = ReleaseManifest::load(&Path::new(crate::common::REPOSITORY).join("manifests/releases/1.0.0.json")).unwrap();
        match ConfigFile::parse(&text, Path::new("stackwright.toml")) {
            Ok(config) => {
                let stacks = stackwright::render::render_all(&config, &release);
                prop_assert!(stacks.is_ok(), "a valid configuration failed to render: {:?}\n{text}", stacks.err());
            }
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for problem in problems {
                    prop_assert!(!problem.key.is_empty() && !problem.hint.is_empty(), "{problem:?}");
                }
            }
            Err(ConfigError::Syntax { line, .. }) => prop_assert!(line >= 1),
            Err(ConfigError::SchemaVersion { .. }) => {}
            Err(ConfigError::Read { .. }) => prop_assert!(false, "parsing text never reads a file"),
            Err(ConfigError::TwoSources { .. }) => prop_assert!(false, "parsing text has one source"),
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = ConfigFile::parse(&text, Path::new("stackwright.toml"));
    }
}
