//! Headless Chromium driven through the DevTools protocol over a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by a NUL byte on the
//! browser's fds 3 and 4), so a test can load a page, read its DOM, press
//! its buttons with real mouse events, answer its prompts and take a
//! screenshot.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The Chromium executable on PATH, if any.
pub fn find() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
}

#[derive(Default)]
struct Shared {
    replies: Mutex<HashMap<u64, Value>>,
    arrived: Condvar,
    /// Texts to type into the page's next prompts, in order.
    answers: Mutex<VecDeque<String>>,
    dialogs: AtomicUsize,
}

pub struct Browser {
    child: Child,
    writer: Arc<Mutex<ChildStdin>>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
    session: String,
    _profile: PathBuf,
}

fn send(writer: &Mutex<ChildStdin>, message: &Value) {
    let mut writer = writer.lock().unwrap();
    writer.write_all(message.to_string().as_bytes()).unwrap();
    writer.write_all(b"\0").unwrap();
    writer.flush().unwrap();
}

impl Browser {
    /// Starts `exe` headless with a `width` x `height` page showing `url`.
    pub fn open(exe: &PathBuf, url: &str, width: u32, height: u32) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("dcb-chromium-{}-{}", std::process::id(), width));
        std::fs::create_dir_all(&profile).unwrap();
        // bash puts our stdin and stdout on the browser's fds 3 and 4.
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let writer = Arc::new(Mutex::new(child.stdin.take().unwrap()));
        let shared = Arc::new(Shared::default());
        let next_id = Arc::new(AtomicU64::new(1));
        let reader = BufReader::new(child.stdout.take().unwrap());
        {
            let (writer, shared, next_id) = (writer.clone(), shared.clone(), next_id.clone());
            std::thread::spawn(move || read_messages(reader, &writer, &shared, &next_id));
        }
        let mut browser = Browser {
            child,
            writer,
            shared,
            next_id,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call_in(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call_in(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser.call("Page.navigate", json!({ "url": url }));
        browser
    }

    fn call_in(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        send(&self.writer, &message);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut replies = self.shared.replies.lock().unwrap();
        loop {
            if let Some(reply) = replies.remove(&id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            assert!(!wait.is_zero(), "no answer to {method}");
            replies = self.shared.arrived.wait_timeout(replies, wait).unwrap().0;
        }
    }

    /// A DevTools command in the page's session.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call_in(Some(&session), method, params)
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    pub fn eval(&self, js: &str) -> Value {
        let reply = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(reply.get("exceptionDetails").is_none(), "{js}: {reply}");
        reply["result"]["value"].clone()
    }

    /// Polls `js` until it is true (at most `limit`).
    pub fn wait_for(&self, js: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.eval(js) == Value::Bool(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Presses the element `selector` names with the mouse, as a person would.
    pub fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            Value::from(selector)
        );
        let at = self.eval(&js);
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Focuses `selector` and types `text` into it.
    pub fn type_into(&self, selector: &str, text: &str) {
        self.eval(&format!(
            "document.querySelector({}).focus()",
            Value::from(selector)
        ));
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// The answer to type into the page's next `prompt()`.
    pub fn answer_next_prompt(&self, text: &str) {
        self.shared
            .answers
            .lock()
            .unwrap()
            .push_back(text.to_owned());
    }

    /// How many dialogs (prompts, alerts) the page opened so far.
    pub fn dialogs(&self) -> usize {
        self.shared.dialogs.load(Ordering::SeqCst)
    }

    /// A PNG of the page as shown.
    pub fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        base64(shot["data"].as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

fn read_messages(
    mut reader: BufReader<std::process::ChildStdout>,
    writer: &Mutex<ChildStdin>,
    shared: &Shared,
    next_id: &AtomicU64,
) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(0, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() == Some(&0) {
            buf.pop();
        }
        let Ok(message) = serde_json::from_slice::<Value>(&buf) else {
            continue;
        };
        if let Some(id) = message["id"].as_u64() {
            shared.replies.lock().unwrap().insert(id, message);
            shared.arrived.notify_all();
        } else if message["method"] == "Page.javascriptDialogOpening" {
            shared.dialogs.fetch_add(1, Ordering::SeqCst);
            let answer = shared.answers.lock().unwrap().pop_front();
            let mut reply = json!({
                "id": next_id.fetch_add(1, Ordering::SeqCst),
                "method": "Page.handleJavaScriptDialog",
                "params": { "accept": answer.is_some(), "promptText": answer.unwrap_or_default() },
            });
            if let Some(session) = message.get("sessionId") {
                reply["sessionId"] = session.clone();
            }
            send(writer, &reply);
        }
    }
}

fn base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let Some(v) = ALPHABET.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}
