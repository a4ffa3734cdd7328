//! The corpus of broken system files: `agent-supervisor check` on each file of
//! `tests/corpus/` must fail and print exactly the errors the file lists at its end as
//! `# expect: error: FILE:LINE:COLUMN: FIELD: MESSAGE` lines, no more and no fewer.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agent-supervisor");

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Runs `check NAME.yaml` in the corpus directory (so places print relative to it); returns
/// the exit code and the error lines.
fn check(file: &str) -> (i32, Vec<String>) {
    let out = Command::new(BIN)
        .arg("check")
        .arg(file)
        .current_dir(corpus_dir())
        .output()
        .expect("run agent-supervisor check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let errors = text
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect();
    (out.status.code().unwrap_or(-1), errors)
}

/// The `# expect:` lines of a corpus file.
fn expected(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(corpus_dir().join(file)).expect("read corpus file");
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

fn run_case(name: &str) {
    let file = format!("{name}.yaml");
    let want = expected(&file);
    assert!(!want.is_empty(), "{file} lists no `# expect:` line");
    let (code, got) = check(&file);
    assert_eq!(
        code,
        1,
        "{file}: check should fail; it printed:\n{}",
        got.join("\n")
    );
    for w in &want {
        assert!(
            got.contains(w),
            "{file}: expected the line\n  {w}\nin check's errors:\n  {}",
            got.join("\n  ")
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{file}: check printed other errors than expected:\n  {}",
        got.join("\n  ")
    );
}

macro_rules! corpus {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_case($name);
            }
        )*

        /// Every file of the corpus has its test above.
        #[test]
        fn every_corpus_file_has_a_test() {
            let listed = [$($name),*];
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(corpus_dir()).expect("read corpus dir") {
                let path = entry.expect("corpus entry").path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    if !listed.contains(&stem.as_str()) {
                        missing.push(stem);
                    }
                }
            }
            assert!(missing.is_empty(), "corpus files without a test: {missing:?}");
        }
    };
}

corpus! {
    all_at_once => "all-at-once",
    missing_address => "missing-address",
    missing_command => "missing-command",
    missing_group_host => "missing-group-host",
    missing_hosts => "missing-hosts",
    sem_address_bad_name => "sem-address-bad-name",
    sem_address_duplicate => "sem-address-duplicate",
    sem_address_empty => "sem-address-empty",
    sem_address_invalid_ip => "sem-address-invalid-ip",
    sem_address_with_port => "sem-address-with-port",
    sem_agent_cycle => "sem-agent-cycle",
    sem_agent_name_chars => "sem-agent-name-chars",
    sem_backoff_order => "sem-backoff-order",
    sem_bind_dotdot_target => "sem-bind-dotdot-target",
    sem_bind_duplicate_target => "sem-bind-duplicate-target",
    sem_bind_missing_source => "sem-bind-missing-source",
    sem_bind_relative_target => "sem-bind-relative-target",
    sem_bridge_bad_prefix => "sem-bridge-bad-prefix",
    sem_bridge_duplicate => "sem-bridge-duplicate",
    sem_bridge_endpoint_clash => "sem-bridge-endpoint-clash",
    sem_bridge_endpoint_ipv6 => "sem-bridge-endpoint-ipv6",
    sem_bridge_endpoint_port => "sem-bridge-endpoint-port",
    sem_bridge_listen_port => "sem-bridge-listen-port",
    sem_bridge_network_address => "sem-bridge-network-address",
    sem_bridge_no_prefix => "sem-bridge-no-prefix",
    sem_bridge_other_subnet => "sem-bridge-other-subnet",
    sem_bridge_overlay_subnet => "sem-bridge-overlay-subnet",
    sem_bridge_overlay_underlay => "sem-bridge-overlay-underlay",
    sem_bridge_public_key => "sem-bridge-public-key",
    sem_cdi_dir_relative => "sem-cdi-dir-relative",
    sem_cgroup_root_dotdot => "sem-cgroup-root-dotdot",
    sem_cgroup_root_reserved => "sem-cgroup-root-reserved",
    sem_command_empty_program => "sem-command-empty-program",
    sem_command_empty_string => "sem-command-empty-string",
    sem_control_group => "sem-control-group",
    sem_control_socket_long => "sem-control-socket-long",
    sem_cpu_weight_zero => "sem-cpu-weight-zero",
    sem_cross_level_cycle => "sem-cross-level-cycle",
    sem_daemon_dotdot_dir => "sem-daemon-dotdot-dir",
    sem_daemon_host_override => "sem-daemon-host-override",
    sem_daemon_relative_dir => "sem-daemon-relative-dir",
    sem_duplicate_agent => "sem-duplicate-agent",
    sem_env_file_bad_line => "sem-env-file-bad-line",
    sem_env_file_bad_names => "sem-env-file-bad-names",
    sem_env_file_missing => "sem-env-file-missing",
    sem_env_name_empty => "sem-env-name-empty",
    sem_env_name_equals => "sem-env-name-equals",
    sem_env_name_space => "sem-env-name-space",
    sem_env_value_nul => "sem-env-value-nul",
    sem_group_cycle => "sem-group-cycle",
    sem_group_healthy_no_check => "sem-group-healthy-no-check",
    sem_group_name_chars => "sem-group-name-chars",
    sem_health_exec_empty => "sem-health-exec-empty",
    sem_health_http_path => "sem-health-http-path",
    sem_health_interval_zero => "sem-health-interval-zero",
    sem_health_no_port => "sem-health-no-port",
    sem_health_retries_zero => "sem-health-retries-zero",
    sem_health_two_kinds => "sem-health-two-kinds",
    sem_healthy_no_check => "sem-healthy-no-check",
    sem_host_image_redefined => "sem-host-image-redefined",
    sem_host_name_chars => "sem-host-name-chars",
    sem_hostname_duplicate => "sem-hostname-duplicate",
    sem_hostname_invalid => "sem-hostname-invalid",
    sem_http_listen => "sem-http-listen",
    sem_memory_high => "sem-memory-high",
    sem_memory_min => "sem-memory-min",
    sem_pids_zero => "sem-pids-zero",
    sem_port_clash => "sem-port-clash",
    sem_port_daemon => "sem-port-daemon",
    sem_port_twice => "sem-port-twice",
    sem_reserved_agent => "sem-reserved-agent",
    sem_self_cycle => "sem-self-cycle",
    sem_stop_signal => "sem-stop-signal",
    sem_two_primaries => "sem-two-primaries",
    sem_unknown_agent_dep => "sem-unknown-agent-dep",
    sem_unknown_group_dep => "sem-unknown-group-dep",
    sem_unknown_host => "sem-unknown-host",
    sem_unknown_image => "sem-unknown-image",
    sem_version => "sem-version",
    stand_in_agent_name => "stand-in-agent-name",
    type_agents_map => "type-agents-map",
    type_bind_form => "type-bind-form",
    type_bind_mode => "type-bind-mode",
    type_command_empty_list => "type-command-empty-list",
    type_command_map => "type-command-map",
    type_command_unclosed_quote => "type-command-unclosed-quote",
    type_cpu_weight_range => "type-cpu-weight-range",
    type_cpus_zero => "type-cpus-zero",
    type_depends_condition => "type-depends-condition",
    type_duration => "type-duration",
    type_env_value_list => "type-env-value-list",
    type_gpu_id => "type-gpu-id",
    type_gpus_unknown_key => "type-gpus-unknown-key",
    type_gpus_word => "type-gpus-word",
    type_health_tcp_false => "type-health-tcp-false",
    type_hosts_list => "type-hosts-list",
    type_memory_size => "type-memory-size",
    type_memory_unit => "type-memory-unit",
    type_network_mode => "type-network-mode",
    type_pids_negative => "type-pids-negative",
    type_port_list => "type-port-list",
    type_port_range => "type-port-range",
    type_port_string => "type-port-string",
    type_port_zero => "type-port-zero",
    type_ports_element => "type-ports-element",
    type_restart_policy => "type-restart-policy",
    type_restart_retries => "type-restart-retries",
    type_rlimit_value => "type-rlimit-value",
    type_role_variant => "type-role-variant",
    type_seccomp_mode => "type-seccomp-mode",
    type_version_string => "type-version-string",
    unknown_agent_key => "unknown-agent-key",
    unknown_bind_key => "unknown-bind-key",
    unknown_daemon_key => "unknown-daemon-key",
    unknown_group_key => "unknown-group-key",
    unknown_health_key => "unknown-health-key",
    unknown_host_key => "unknown-host-key",
    unknown_restart_key => "unknown-restart-key",
    unknown_top => "unknown-top",
    yaml_bad_indent => "yaml-bad-indent",
    yaml_bom => "yaml-bom",
    yaml_comment_only => "yaml-comment-only",
    yaml_duplicate_group => "yaml-duplicate-group",
    yaml_duplicate_key => "yaml-duplicate-key",
    yaml_empty => "yaml-empty",
    yaml_mapping_in_scalar => "yaml-mapping-in-scalar",
    yaml_second_document => "yaml-second-document",
    yaml_tab_indent => "yaml-tab-indent",
    yaml_tag_binary => "yaml-tag-binary",
    yaml_tag_custom => "yaml-tag-custom",
    yaml_top_list => "yaml-top-list",
    yaml_unclosed_brace => "yaml-unclosed-brace",
    yaml_unclosed_bracket => "yaml-unclosed-bracket",
    yaml_unclosed_quote => "yaml-unclosed-quote",
    yaml_undefined_alias => "yaml-undefined-alias",
    net_address_gateway => "net-address-gateway",
    net_address_not_ip => "net-address-not-ip",
    net_address_outside => "net-address-outside",
    net_address_twice => "net-address-twice",
    net_egress_type => "net-egress-type",
    net_mode_unknown_key => "net-mode-unknown-key",
    net_subnet_host_bits => "net-subnet-host-bits",
    net_subnet_overlap => "net-subnet-overlap",
    net_subnet_prefix => "net-subnet-prefix",
    publish_bad_address => "publish-bad-address",
    publish_bad_form => "publish-bad-form",
    publish_clash => "publish-clash",
    publish_daemon_port => "publish-daemon-port",
    publish_host_group => "publish-host-group",
    publish_missing_port => "publish-missing-port",
    publish_no_port => "publish-no-port",
}

/// The acceptance criterion of issue 10: several type errors and several semantic errors in
/// one file are all reported, each with its place, in one run.
#[test]
fn type_errors_do_not_hide_semantic_errors() {
    let (code, got) = check("all-at-once.yaml");
    assert_eq!(code, 1);
    let has = |place: &str, text: &str| {
        assert!(
            got.iter().any(|l| l.contains(place) && l.contains(text)),
            "expected {place} ... {text} in:\n  {}",
            got.join("\n  ")
        );
    };
    // Type errors.
    has(
        "all-at-once.yaml:4:33: hosts.h2.role:",
        "unknown variant `captain`",
    );
    has(
        "all-at-once.yaml:8:25: groups.web.resources.memory:",
        "got \"plenty\"",
    );
    has(
        "all-at-once.yaml:16:48: groups.web.agents[1].restart.max_retries:",
        "got -3",
    );
    // Semantic errors, found on what did parse.
    has(
        "all-at-once.yaml:4:17: hosts.h2.address:",
        "also the address of host h1",
    );
    has(
        "all-at-once.yaml:15:15: groups.web.agents[1].port:",
        "port 18080 of web:back is already used by web:front",
    );
    has(
        "all-at-once.yaml:18:11: groups.db.host:",
        "unknown host \"h9\"",
    );
    has(
        "all-at-once.yaml:19:17: groups.db.depends_on.cache:",
        "unknown group \"cache\"",
    );
    has(
        "all-at-once.yaml:24:29: groups.db.agents[0].depends_on.front:",
        "front has no health check",
    );
    assert_eq!(got.len(), 8, "{}", got.join("\n"));
}

/// A field that could not be read is reported once: what depends on it (a reference to
/// the agent whose name is broken, checks of the stand-in) is not reported again.
#[test]
fn a_broken_name_is_reported_once() {
    let (_, got) = check("stand-in-agent-name.yaml");
    assert!(got.iter().all(|l| !l.contains("unknown agent")), "{got:?}");
    assert!(got.iter().all(|l| !l.contains("may use only")), "{got:?}");
}
