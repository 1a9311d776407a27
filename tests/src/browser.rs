//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test` installs), for the dashboard's tests. Just the few W3C WebDriver commands
//! the tests need, over HTTP.

use std::{path::PathBuf, process::Stdio, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::eventually;

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    _driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    /// Ends the WebDriver session, so chromedriver closes Chromium (killing chromedriver
    /// alone leaves the browser running), then removes its profile. Blocking, as a drop must
    /// be; chromedriver answers once the browser is gone.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.driver_url.trim_start_matches("http://");
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn chromium() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed: run the suite with scripts/test, which installs it")
        .to_owned()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Self {
        crate::app::init_logs();
        let port = crate::process::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "chromedriver is not installed: run the suite with scripts/test, which installs it",
            );
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(20), "chromedriver is ready", || async {
            let r = http.get(format!("{driver_url}/status")).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let profile = std::env::temp_dir().join(crate::unique("herald-chromium-"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Element look-ups wait for the element (a page still loading on a busy machine).
            "timeouts": {"implicit": 10_000, "pageLoad": 30_000},
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let created: Value = http
            .post(format!("{driver_url}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {created}"))
            .to_owned();
        Self {
            http,
            session,
            driver_url,
            _driver: driver,
            profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.driver_url, self.session)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {v}");
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the browser is on a URL ending with `suffix` (a click's navigation can
    /// finish after the click returns), and returns the URL.
    pub async fn wait_for_url(&self, suffix: &str) -> String {
        eventually(
            Duration::from_secs(10),
            &format!("the browser is on …{suffix}"),
            || async {
                let url = self.current_url().await;
                url.ends_with(suffix).then_some(url)
            },
        )
        .await
    }

    /// Waits until the page's HTML contains `needle`, and returns the HTML.
    pub async fn wait_for_source(&self, needle: &str) -> String {
        eventually(
            Duration::from_secs(10),
            &format!("the page shows {needle:?}"),
            || async {
                let html = self.source().await;
                html.contains(needle).then_some(html)
            },
        )
        .await
    }

    /// The page's HTML now.
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element a CSS selector finds (panics when there is none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css}: {v}"))
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        STANDARD.decode(v.as_str().unwrap_or_default()).unwrap()
    }

    /// Takes a screenshot (asserting it is a PNG) and keeps it as `screenshots/<name>.png`
    /// beside the binaries (`target/debug/screenshots/`); the README's images in `docs/` are
    /// copies of these.
    pub async fn save_screenshot(&self, name: &str) {
        let shot = self.screenshot().await;
        assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = crate::process::bin_dir().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &shot).unwrap();
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Whether the page is wider than the window (it scrolls sideways).
    pub async fn scrolls_sideways(&self) -> bool {
        self.eval(
            "return document.documentElement.scrollWidth > document.documentElement.clientWidth;",
        )
        .await
        .as_bool()
        .unwrap_or(true)
    }

    /// Cookies the browser holds for the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
