//! Interop: the driver against pymodbus 3.x, an independent Modbus implementation.
//!
//! Needs a python with the pymodbus release `scripts/test` pins: `$CAMPUSGW_PYTHON` (set by
//! `scripts/test`), else the project's `.venv/bin/python`, else `python3`. Without it the
//! test fails with a message saying so, it does not pass silently. The server script is
//! `tests/pymodbus_server.py`; it binds an ephemeral port and prints it, and answers
//! `get`/`set` lines on stdin from its own datastore so writes are checked on the far side.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use campusgw_modbus::ModbusTcpConfig;
use campusgw_sdk::CommandStatus;
use common::{T, events_of, register_write, relay_set, spawn_driver, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The python that has pymodbus: `$CAMPUSGW_PYTHON`, else the workspace's `.venv` (what
/// `scripts/test` creates), else `python3` on the PATH.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAMPUSGW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The pymodbus server child; killed when dropped.
struct PyServer {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl PyServer {
    async fn start() -> PyServer {
        let python = python();
        let probe = Command::new(&python)
            .args(["-c", "import pymodbus; print(pymodbus.__version__)"])
            .output()
            .await;
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "pymodbus is not installed for {} (run `scripts/test`, which installs it into .venv/): {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "{} is required for the pymodbus interop test but could not be run: {e}",
                python.display()
            ),
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pymodbus_server.py");
        let mut child = Command::new(&python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pymodbus_server.py");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(T, stdout.next_line())
            .await
            .expect("pymodbus server printed its port in time")
            .expect("read pymodbus server stdout")
            .expect("pymodbus server exited before printing its port");
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("expected `PORT <n>` from the pymodbus server, got {first:?}")
            });
        PyServer {
            _child: child,
            stdin,
            stdout,
            port,
        }
    }

    /// Sends one command line and returns the answer line.
    async fn ask(&mut self, line: &str) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to pymodbus server");
        self.stdin.flush().await.expect("flush");
        tokio::time::timeout(T, self.stdout.next_line())
            .await
            .expect("pymodbus server answered in time")
            .expect("read answer")
            .expect("pymodbus server still running")
    }
}

#[tokio::test]
async fn the_driver_interoperates_with_a_pymodbus_server() {
    within(async {
        let mut py = PyServer::start().await;
        let cfg: ModbusTcpConfig = toml::from_str(&format!(
            r#"
address = "127.0.0.1:{}"
unit = 1
poll_interval = "100ms"
request_timeout = "5s"
[[points]]
name = "fire_alarm_out"
table = "discrete_input"
address = 3
on_kind = "fire.alarm"
off_kind = "fire.reset"
class = "life_safety"
[[points]]
name = "boiler_temp"
table = "input_register"
address = 10
type = "f32"
unit = "°C"
[[points]]
name = "siren"
table = "coil"
address = 0
writable = true
[[points]]
name = "setpoint"
table = "holding_register"
address = 20
type = "i16"
scale = 0.1
writable = true
"#,
            py.port
        ))
        .expect("config parses");
        let (host, driver) = spawn_driver(&cfg);

        // discrete input 3 is on in the server from the start: an active alarm is reported
        let alarm = host.wait_for_kind("fire.alarm", T).await;
        assert_eq!(alarm.payload["point"], "fire_alarm_out");
        let temp = common::wait_for_point(&host, "boiler_temp", 1).await;
        assert_eq!(temp.payload["value"], 21.5);

        assert_eq!(py.ask("set 2 3 0").await, "ok");
        let reset = host.wait_for_kind("fire.reset", T).await;
        assert_eq!(reset.payload["value"], false);

        let r = host.command(relay_set("siren", true), "dev", T).await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        assert_eq!(
            py.ask("get 1 0").await,
            "1",
            "pymodbus sees the coil written"
        );

        let r = host
            .command(register_write("setpoint", -21.5), "dev", T)
            .await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        assert_eq!(
            py.ask("get 3 20").await,
            "65321",
            "pymodbus holds -215 as two's complement"
        );

        assert_eq!(events_of(&host, "fire.alarm").len(), 1);
        host.shutdown();
        tokio::time::timeout(T, driver)
            .await
            .expect("driver stops promptly")
            .expect("driver task")
            .expect("clean end");
    })
    .await;
}
