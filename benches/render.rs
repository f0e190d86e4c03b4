//! Start-up and render time. Prints its figures; run with `cargo bench --bench render`.
//!
//! - start-up: `stackwright --version` as a process, beside `true` (the cost of any process).
//! - render: every stack of one networking mode, in process (context, handlebars, parse-back
//!   validation), the first render of the process separately since it compiles the templates.
//! - render command: `stackwright render` as a process, writing every file, per mode.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stackwright::config::ConfigFile;
use stackwright::release::ReleaseManifest;

const MODES: &[(&str, &str)] = &[
    ("public", "mode = \"public\""),
    ("private", "mode = \"private\""),
    ("all-private", "mode = \"all-private\""),
    (
        "all-private+public-services",
        "mode = \"all-private\"\npublic_services = true",
    ),
];

fn config_text(mode_lines: &str) -> String {
    format!(
        "schema_version = 1\n[instance]\nname = \"bench\"\ndomain = \"cde.bench.example\"\nregion = \"us-east-1\"\n\
         [network]\n{mode_lines}\navailability_zones = 3\n[control_plane]\nurl = \"https://control.example.com\"\n\
         [identity]\nsubject_patterns = [\"org:bench/project:*\"]\n"
    )
}

struct Figures {
    samples: Vec<Duration>,
}

impl Figures {
    fn measure(iterations: usize, mut work: impl FnMut()) -> Self {
        let samples = (0..iterations)
            .map(|_| {
                let start = Instant::now();
                work();
                start.elapsed()
            })
            .collect::<Vec<_>>();
        let mut figures = Figures { samples };
        figures.samples.sort();
        figures
    }

    fn percentile(&self, fraction: f64) -> Duration {
        let index = ((self.samples.len() as f64 - 1.0) * fraction).round() as usize;
        self.samples[index]
    }

    fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }

    fn row(&self, name: &str) -> String {
        format!(
            "{name:<44} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            ms(self.mean()),
            ms(self.samples[0]),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
        )
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let binary = env!("CARGO_BIN_EXE_stackwright");
    let release_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/releases/1.0.0.json");
    let release = ReleaseManifest::load(&release_path).expect("the example release loads");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "measure (milliseconds)", "mean", "min", "p50", "p99"
    );

    let peer = Figures::measure(200, || {
        Command::new("true").status().expect("true runs");
    });
    println!("{}", peer.row("process start-up floor: true"));
    let version = Figures::measure(200, || {
        Command::new(binary)
            .arg("--version")
            .output()
            .expect("stackwright runs");
    });
    println!("{}", version.row("start-up: stackwright --version"));

    let first_config =
        ConfigFile::parse(&config_text(MODES[0].1), Path::new("bench.toml")).expect("valid");
    let first = Instant::now();
    let stacks = stackwright::render::render_all(&first_config, &release).expect("renders");
    println!(
        "{:<44} {:>9.3}   ({} stacks, templates compiled on first use)",
        "render, first in process",
        ms(first.elapsed()),
        stacks.len()
    );

    let out = std::env::temp_dir().join(format!("stackwright-bench-{}", std::process::id()));
    for (mode, lines) in MODES {
        let config =
            ConfigFile::parse(&config_text(lines), Path::new("bench.toml")).expect("valid");
        let mut bytes = 0;
        let figures = Figures::measure(200, || {
            let stacks = stackwright::render::render_all(&config, &release).expect("renders");
            bytes = stacks.iter().map(|stack| stack.body.len()).sum();
        });
        println!(
            "{}   ({bytes} bytes)",
            figures.row(&format!("render every stack: {mode}"))
        );

        let config_path = out.join(format!("{mode}.toml"));
        std::fs::create_dir_all(&out).expect("a scratch directory");
        std::fs::write(&config_path, config_text(lines)).expect("the configuration is written");
        let command = Figures::measure(50, || {
            let status = Command::new(binary)
                .arg("--config")
                .arg(&config_path)
                .args(["--quiet", "render", "--out"])
                .arg(out.join(mode))
                .arg("--manifest-file")
                .arg(&release_path)
                .arg("--allow-unsigned")
                .stdout(std::process::Stdio::null())
                .status()
                .expect("stackwright runs");
            assert!(status.success());
        });
        println!(
            "{}",
            command.row(&format!("stackwright render (process): {mode}"))
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
