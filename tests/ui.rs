//! The web UI against the real application on port 0: its files over plain HTTP, and its pages in a
//! real browser, Debian's Chromium, headless, driven over WebDriver by Debian's chromedriver (both
//! installed by `.ci/browser`). The browser test walks what an operator does (the queue board, a
//! loop, acknowledging it, the taxonomy tester) and visits every other page, on a laptop-sized window
//! and on a phone-sized one, and writes a screenshot of each page to `target/ui-screenshots/` for
//! review.
//!
//! A missing browser fails the test with the command that installs it: a UI test that skipped itself
//! would pass CI without testing anything.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{account, event, nps, ticket, TestApp};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// A laptop screen's viewport, and a small phone's (the narrowest the UI is made for).
const LAPTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (375, 812);
/// How long a page may take to show what the test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary_with_types_and_cache_headers() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();

    let page = client
        .get(&app.address)
        .send()
        .await
        .expect("GET / answers");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    // The API's security headers cover the UI: its policy allows this origin and no other.
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(!policy.contains("http"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    let version = sigloop::ui::version();
    assert!(
        html.contains(&format!("/ui/app.js?v={version}")),
        "the page links this build's script: {html}"
    );

    let again = client
        .get(&app.address)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "an unchanged page is not sent again");

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let versioned = client
            .get(format!("{}/ui/{file}?v={version}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(versioned.status(), 200, "{file}");
        assert_eq!(versioned.headers()["content-type"], content_type, "{file}");
        assert_eq!(
            versioned.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{file} with this build's version is cached for good"
        );
        assert!(!versioned.bytes().await.unwrap().is_empty(), "{file}");
        let unversioned = client
            .get(format!("{}/ui/{file}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(
            unversioned.headers()["cache-control"],
            "no-cache",
            "{file} without the version is revalidated"
        );
    }

    let (status, body) = app.get("/ui/nothing.js").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app.get("/v1/queues").await;
    assert_eq!(status, 200, "the API answers beside the UI");
}

#[tokio::test]
async fn in_a_browser_an_operator_acknowledges_a_loop_from_the_board_and_tests_the_taxonomy() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    seed(&app).await;
    let aurora = only_loop(&app, "account_id=acct-aurora").await;

    let driver = Chromedriver::start().await;
    let mut browser = Browser::open(&driver, &app.address).await;

    // The queue board shows each queue's counts, and follows new loops without a reload.
    browser.visit("#/").await;
    browser
        .wait_for_text("[data-queue='cs-enterprise'] [data-state='open'] dd", "1")
        .await;
    // Every queue's every count is the API's.
    let (_, queues) = app.get("/v1/queues").await;
    for queue in queues["queues"].as_array().expect("queues") {
        let name = queue["name"].as_str().expect("queue name");
        for (state, count) in queue["counts"].as_object().expect("counts") {
            browser
                .wait_for_text(
                    &format!("[data-queue='{name}'] [data-state='{state}'] dd"),
                    &count.to_string(),
                )
                .await;
        }
    }
    browser.expect_no_sideways_scroll("the queue board").await;
    browser.screenshot("board").await;
    // Keyboard: the first Tab reaches the skip link, and Enter on it moves focus to the content.
    browser.press(Key::Tab).await;
    assert_eq!(
        browser
            .script("return document.activeElement.textContent")
            .await,
        "Skip to content"
    );
    browser.press(Key::Enter).await;
    assert_eq!(
        browser.script("return document.activeElement.id").await,
        "main"
    );
    app.ingest(&[
        account("acct-cedar", "enterprise", Some("ana.lima")),
        nps(
            "cedar-1",
            "acct-cedar",
            1,
            20,
            Some("Setup took weeks and nobody helped"),
        ),
    ])
    .await;
    browser
        .wait_for_text("[data-queue='cs-enterprise'] [data-state='open'] dd", "2")
        .await;

    // From the board's count to the loop list, filtered to that queue and state.
    browser
        .click("[data-queue='cs-enterprise'] [data-state='open'] a")
        .await;
    browser
        .wait_for_text(&format!("tr[data-loop='{aurora}']"), "acct-aurora")
        .await;
    assert_eq!(
        browser
            .script("return document.getElementById('filter-state').value")
            .await,
        "open"
    );
    browser.screenshot("loops-filtered").await;

    // The loop page: state, evidence with the matched text, the decision trace, the history.
    browser
        .click(&format!("tr[data-loop='{aurora}'] td a"))
        .await;
    browser.wait_for_text("#loop-state", "open").await;
    let evidence = browser.texts("#evidence mark").await;
    assert!(
        evidence.iter().any(|text| text == "invoice"),
        "the evidence highlights the matched word: {evidence:?}"
    );
    browser.wait_for_text("#trace", "enterprise-critical").await;
    browser.wait_for_text("#trace", "ana.lima").await;
    browser.wait_for_text("#sla", "Acknowledge by").await;
    assert_eq!(browser.texts("#history-list li").await.len(), 1);
    browser.screenshot("loop").await;

    // Acknowledge it from the keyboard: the name, then Enter on the button.
    browser.type_into("#action-actor", "ana.lima").await;
    browser
        .send_keys(
            "button[value='acknowledge']",
            &char::from(Key::Enter).to_string(),
        )
        .await;
    browser.wait_for_text("#loop-state", "acknowledged").await;
    let history = browser.texts("#history-list li").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history[1].contains("acknowledge") && history[1].contains("ana.lima"),
        "the new history entry names the action and the actor: {history:?}"
    );
    browser
        .wait_for_text("#action-status", "the loop is now acknowledged")
        .await;
    let (_, stored) = app.get(&format!("/v1/loops/{aurora}")).await;
    assert_eq!(stored["state"], "acknowledged", "{stored}");
    assert_eq!(stored["history"][1]["actor"], "ana.lima", "{stored}");
    browser.screenshot("loop-acknowledged").await;
    browser.visit("#/").await;
    browser
        .wait_for_text(
            "[data-queue='cs-enterprise'] [data-state='acknowledged'] dd",
            "1",
        )
        .await;

    // The taxonomy tester tags pasted text and highlights the evidence. The text starts with
    // characters of several UTF-8 bytes, so a highlight taken from the API's byte offsets as string
    // positions would land beside the words.
    browser.click("a[data-nav='tester']").await;
    browser
        .type_into(
            "#tester-text",
            "Café Zürich — we were charged twice for one month, please refund.",
        )
        .await;
    browser.click("#tester-submit").await;
    browser.wait_for_element("#tester-highlight mark").await;
    let marks = browser.texts("#tester-highlight mark").await;
    assert!(
        marks.iter().any(|text| text == "charged twice"),
        "the matched phrase is highlighted exactly: {marks:?}"
    );
    let tags = browser
        .script(
            "return [...document.querySelectorAll('#tester-highlight mark')]\
             .map((mark) => mark.dataset.tags).join(' ')",
        )
        .await;
    assert!(tags.contains("billing.double-charge"), "{tags}");
    browser
        .wait_for_text("#tester-primary", "billing.double-charge")
        .await;
    browser.screenshot("tester").await;

    // Every other page loads with what the seed put there.
    browser.visit("#/journeys").await;
    browser
        .wait_for_text("#journey-heatmap thead", "onboarding")
        .await;
    browser
        .wait_for_text("#journey-heatmap tbody", "All tags")
        .await;
    browser.screenshot("journeys").await;
    browser.visit("#/journeys?metric=trend&level=top").await;
    browser
        .wait_for_text("#journey-heatmap-title", "Trend")
        .await;
    browser.screenshot("journeys-trend").await;

    browser.visit("#/accounts/acct-aurora").await;
    browser.wait_for_text("#profile", "acct-aurora Inc").await;
    browser.wait_for_text("#signals", "detractor").await;
    browser.screenshot("account").await;

    browser.visit("#/dead-letters").await;
    browser.wait_for_text("#dead-letters", "unknown_type").await;
    browser.screenshot("dead-letters").await;

    browser.visit("#/loops").await;
    browser.wait_for_text("#loop-results", "acct-birch").await;
    browser.screenshot("loops").await;

    browser.visit("#/sign-in").await;
    browser.wait_for_element("#sign-in-token").await;
    browser.screenshot("sign-in").await;

    // A phone: the same pages, one column, no sideways scrolling.
    browser.resize(PHONE).await;
    for (name, hash, wanted) in [
        (
            "board-phone",
            "#/".to_owned(),
            "[data-queue='cs-enterprise']",
        ),
        ("loop-phone", format!("#/loops/{aurora}"), "#history-list"),
        ("loops-phone", "#/loops".to_owned(), "#loop-results table"),
        (
            "journeys-phone",
            "#/journeys".to_owned(),
            "#journey-heatmap",
        ),
        ("tester-phone", "#/tester".to_owned(), "#tester-text"),
    ] {
        browser.visit(&hash).await;
        browser.wait_for_element(wanted).await;
        browser.expect_no_sideways_scroll(name).await;
        browser.screenshot(name).await;
    }

    let errors = browser
        .script("return String(window.__sigloopErrors || '')")
        .await;
    assert_eq!(errors, "", "the page logged script errors");
    browser.close().await;
    eprintln!(
        "The browser test took {:.1} s; screenshots are in {}.",
        started.elapsed().as_secs_f64(),
        screenshot_dir().display()
    );
}

#[tokio::test]
async fn with_tokens_required_the_ui_signs_in_with_one_and_acts_under_its_name() {
    let app = TestApp::spawn_with(&[("SIGLOOP__SERVER__AUTH", "tokens")]).await;
    let admin = create_token(&app, "admin", "seeder");
    let operator = create_token(&app, "read,act", "ana.lima");
    let response = authorized(&app, &admin)
        .post(format!("{}/v1/events?wait=true", app.address))
        .json(&json!([
            account("acct-aurora", "enterprise", Some("ana.lima")),
            nps(
                "aurora-1",
                "acct-aurora",
                2,
                10,
                Some("The invoice was wrong again"),
            ),
        ]))
        .send()
        .await
        .expect("the seed is sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("the answer is JSON");
    assert_eq!(answer["processed"], true, "{answer}");
    let loops: Value = authorized(&app, &admin)
        .get(format!("{}/v1/loops?account_id=acct-aurora", app.address))
        .send()
        .await
        .expect("the loops are read")
        .json()
        .await
        .expect("loops are JSON");
    let id = loops["loops"][0]["id"].as_str().expect("a loop").to_owned();

    let driver = Chromedriver::start().await;
    let browser = Browser::open(&driver, &app.address).await;
    // Without a token every page leads to the sign-in form, saying why.
    browser.visit("#/").await;
    browser.wait_for_element("#sign-in-token").await;
    browser.wait_for_text("#sign-in-reason", "token").await;
    browser.screenshot("sign-in-required").await;

    browser.type_into("#sign-in-token", "sgl_not-a-token").await;
    browser.click("#sign-in-form button[type='submit']").await;
    browser.wait_for_text("#sign-in-form", "refused").await;

    browser.type_into("#sign-in-token", &operator).await;
    browser.click("#sign-in-form button[type='submit']").await;
    browser
        .wait_for_text("[data-queue='cs-enterprise'] [data-state='open'] dd", "1")
        .await;
    browser.wait_for_text("#session-name", "ana.lima").await;

    // The token names the actor: the loop page asks for no name, and the history shows the token's.
    browser.visit(&format!("#/loops/{id}")).await;
    browser.wait_for_text(".recorded-as", "ana.lima").await;
    assert!(browser.texts("#action-actor").await.is_empty());
    browser.click("button[value='acknowledge']").await;
    browser.wait_for_text("#loop-state", "acknowledged").await;
    browser
        .wait_for_text("#history-list li:last-child", "ana.lima")
        .await;
    browser.screenshot("loop-signed-in").await;

    browser.click("#sign-out").await;
    browser.wait_for_element("#sign-in-token").await;
    browser.close().await;
}

/// A token made by `sigloop token create` on the application's database; its secret.
fn create_token(app: &TestApp, scopes: &str, name: &str) -> String {
    let output = common::run(
        common::sigloop(&["token", "create", "--scope", scopes, "--name", name, "--db"])
            .arg(&app.db_path),
    );
    common::assert_exit_code(&output, 0);
    let secret = common::stdout_of(&output).trim().to_owned();
    assert!(
        secret.starts_with("sgl_"),
        "the secret is printed: {secret}"
    );
    secret
}

/// A request builder factory that sends `token`.
fn authorized(app: &TestApp, token: &str) -> AuthorizedClient {
    AuthorizedClient {
        client: app.client.clone(),
        token: token.to_owned(),
    }
}

struct AuthorizedClient {
    client: reqwest::Client,
    token: String,
}

impl AuthorizedClient {
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.client.get(url).bearer_auth(&self.token)
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.client.post(url).bearer_auth(&self.token)
    }
}

/// Accounts, loops on two queues, journey figures over two weeks and one dead letter.
async fn seed(app: &TestApp) {
    let week = 7 * 24 * 60;
    let mut events = vec![
        account("acct-aurora", "enterprise", Some("ana.lima")),
        account("acct-birch", "mid-market", Some("dev.patel")),
    ];
    // Last week: responses and tickets at onboarding, so this week has something to compare to.
    for index in 0..6 {
        let mut response = nps(
            &format!("past-{index}"),
            "acct-birch",
            if index < 4 { 9 } else { 3 },
            index - week,
            Some("The onboarding call was helpful"),
        );
        response["data"]["journey_stage"] = json!("onboarding");
        events.push(response);
    }
    for index in 0..3 {
        events.push(ticket(
            &format!("past-ticket-{index}"),
            "acct-birch",
            index - week,
            "Cannot log in after the password reset",
            "normal",
        ));
    }
    // This week: a detractor at an enterprise account opens a loop on its CSM's queue.
    let mut detractor = nps(
        "aurora-1",
        "acct-aurora",
        2,
        10,
        Some("The invoice was wrong again and nobody answered"),
    );
    detractor["data"]["journey_stage"] = json!("onboarding");
    events.push(detractor);
    // Repeat tickets on one tag open a loop on the mid-market queue.
    for index in 0..4 {
        events.push(ticket(
            &format!("birch-{index}"),
            "acct-birch",
            30 + index * 60,
            "Our invoice has the wrong amount",
            "normal",
        ));
    }
    for index in 0..3 {
        let mut response = nps(
            &format!("now-{index}"),
            "acct-birch",
            2,
            20 + index,
            Some("Onboarding is confusing"),
        );
        response["data"]["journey_stage"] = json!("onboarding");
        events.push(response);
    }
    app.ingest(&events).await;
    let (status, body) = app
        .post_json(
            "/v1/events",
            &event(
                "ticket.deleted",
                "bad-1",
                0,
                json!({"ticket_id": "T", "account_id": "acct-aurora"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "the bad event is refused: {body}");
}

async fn only_loop(app: &TestApp, filter: &str) -> String {
    let loops = app.loops(filter).await;
    assert_eq!(loops.len(), 1, "one loop for {filter}: {loops:?}");
    loops[0]["id"].as_str().expect("loop id").to_owned()
}

/// `target/ui-screenshots` of this build (`CARGO_TARGET_DIR` when set).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

/// `/usr/bin/chromium` or `/usr/bin/chromedriver` (or the path in `variable`), which must exist.
fn browser_program(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.is_file() {
        let ci = if std::env::var_os("CI").is_some() {
            " CI is set, so a missing browser fails the run instead of leaving the UI untested."
        } else {
            ""
        };
        panic!(
            "{} is missing: the UI test drives Debian's chromium through chromium-driver. Install \
             both with `.ci/browser` (as root), or name other binaries with {variable}.{ci}",
            path.display()
        );
    }
    path
}

/// chromedriver on a free port, in a process group of its own so that the browsers it starts go
/// with it when the test ends, however it ends.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let program = browser_program("SIGLOOP_CHROMEDRIVER", CHROMEDRIVER);
        let port = common::free_port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .arg("--log-level=WARNING")
            // Times on the pages read the same on every machine.
            .env("TZ", "UTC")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{} does not start: {error}", program.display()));
        let mut driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = client.get(format!("{}/status", driver.url)).send().await {
                let status: Value = response.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    return driver;
                }
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!("{} exited before it was ready: {exit}", program.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on {} within {PATIENCE:?}",
                program.display(),
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it started that is still running.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on the UI at `base`.
struct Browser {
    client: Client,
    base: String,
    size: (u32, u32),
}

impl Browser {
    async fn open(driver: &Chromedriver, base: &str) -> Browser {
        let chromium = browser_program("SIGLOOP_CHROMIUM", CHROMIUM);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // CI runs as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-extensions",
                    "--no-first-run",
                    "--lang=en-US",
                    format!("--window-size={},{}", LAPTOP.0, LAPTOP.1),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|error| panic!("chromedriver starts a Chromium session: {error}"));
        let mut browser = Browser {
            client,
            base: base.to_owned(),
            size: LAPTOP,
        };
        browser.resize(LAPTOP).await;
        std::fs::create_dir_all(screenshot_dir()).expect("the screenshot folder is created");
        browser
    }

    /// Opens a page of the UI by its hash route. The first visit loads the document; later ones
    /// change only the hash, as a click on a link would.
    async fn visit(&self, hash: &str) {
        let current = self.client.current_url().await.expect("the URL is read");
        if current.as_str().starts_with(&self.base) {
            let script = "location.hash = arguments[0]";
            self.client
                .execute(script, vec![json!(hash)])
                .await
                .expect("the hash changes");
        } else {
            self.client
                .goto(&format!("{}/{hash}", self.base))
                .await
                .expect("the page loads");
            // Script errors are kept where the test can read them.
            self.client
                .execute(
                    "window.__sigloopErrors = []; \
                     window.addEventListener('error', (event) => \
                         window.__sigloopErrors.push(event.message)); \
                     window.addEventListener('unhandledrejection', (event) => \
                         window.__sigloopErrors.push(String(event.reason)));",
                    vec![],
                )
                .await
                .expect("the error trap is set");
        }
    }

    /// Makes the viewport (what the page sees and the screenshot shows) `size`.
    async fn resize(&mut self, size: (u32, u32)) {
        self.set_viewport(size.0, size.1).await;
        self.size = size;
    }

    /// Sets the window so that its viewport is `width` x `height`: the window's own frame, if it
    /// has one, is measured and added.
    async fn set_viewport(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("the window is resized");
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("the viewport is read");
        let frame = |outer: u32, inner: &Value| {
            outer.saturating_sub(inner.as_u64().unwrap_or(u64::from(outer)) as u32)
        };
        let (frame_width, frame_height) = (frame(width, &inner[0]), frame(height, &inner[1]));
        if frame_width > 0 || frame_height > 0 {
            self.client
                .set_window_size(width + frame_width, height + frame_height)
                .await
                .expect("the window is resized");
        }
    }

    /// Waits until an element matching `css` exists.
    async fn wait_for_element(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                if !found.is_empty() {
                    return;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no element matches `{css}`")).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an element matching `css` shows `wanted`: exactly, for a bare number, else
    /// somewhere in its text.
    async fn wait_for_text(&self, css: &str, wanted: &str) {
        let exact = wanted.chars().all(|character| character.is_ascii_digit());
        let deadline = Instant::now() + PATIENCE;
        loop {
            let texts = self.texts(css).await;
            if texts.iter().any(|text| {
                if exact {
                    text.trim() == wanted
                } else {
                    text.contains(wanted)
                }
            }) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no element matching `{css}` shows `{wanted}`; they show {texts:?}"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible texts of the elements matching `css`.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
            for element in elements {
                if let Ok(text) = element.text().await {
                    texts.push(text);
                }
            }
        }
        texts
    }

    async fn click(&self, css: &str) {
        self.wait_for_element(css).await;
        let element = self.client.find(Locator::Css(css)).await.expect("found");
        if let Err(error) = element.click().await {
            self.fail(&format!("`{css}` cannot be clicked: {error}"))
                .await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.wait_for_element(css).await;
        let element = self.client.find(Locator::Css(css)).await.expect("found");
        element.clear().await.expect("the field is cleared");
        element.send_keys(text).await.expect("the text is typed");
    }

    async fn send_keys(&self, css: &str, keys: &str) {
        self.wait_for_element(css).await;
        let element = self.client.find(Locator::Css(css)).await.expect("found");
        element.send_keys(keys).await.expect("the keys are sent");
    }

    /// One key pressed and released where the focus is.
    async fn press(&self, key: Key) {
        let actions = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        self.client
            .perform_actions(actions)
            .await
            .expect("the key is pressed");
    }

    /// Runs `script` in the page and gives back its result as text.
    async fn script(&self, script: &str) -> String {
        match self.client.execute(script, vec![]).await {
            Ok(Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(error) => panic!("the script failed: {error}\n{script}"),
        }
    }

    async fn expect_no_sideways_scroll(&self, page: &str) {
        let widths = self
            .client
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                vec![],
            )
            .await
            .expect("the widths are read");
        let (content, viewport) = (widths[0].as_u64(), widths[1].as_u64());
        if content > viewport {
            self.fail(&format!(
                "{page} is wider than the {viewport:?} px window ({content:?} px): it scrolls sideways"
            ))
            .await;
        }
    }

    /// A screenshot of the whole page: the viewport made as tall as the page, then put back.
    async fn screenshot(&self, name: &str) {
        // Let the page settle (a last render, the live region) before it is photographed.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .ok()
            .and_then(|value| value.as_u64())
            .unwrap_or(u64::from(self.size.1)) as u32;
        let (width, standard_height) = self.size;
        self.set_viewport(width, height.clamp(standard_height, 8000))
            .await;
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|error| panic!("{} is written: {error}", path.display()));
        self.set_viewport(width, standard_height).await;
    }

    /// Fails the test with the page's text and a screenshot of the moment.
    async fn fail(&self, message: &str) -> ! {
        let text = self
            .client
            .execute("return document.body.innerText", vec![])
            .await
            .map(|value| value.as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let url = self
            .client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_default();
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(screenshot_dir().join("failure.png"), png);
        }
        panic!(
            "{message}\nat {url} (screenshot: {})\npage text:\n{text}",
            screenshot_dir().join("failure.png").display()
        );
    }

    async fn close(self) {
        self.client.close().await.expect("the browser session ends");
    }
}
