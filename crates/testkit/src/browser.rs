//! Mail as a phone shows it: HTML rendered by a real headless browser
//! (Debian's `chromium`, which `scripts/install-deps` installs) at a
//! phone's width, measured and photographed.
//!
//! No WebDriver: the page is put in an `<iframe srcdoc>` of exactly the
//! phone's size inside a page of our own, whose script measures the mail
//! once everything has loaded and writes the facts as JSON into its own
//! DOM, which `chromium --dump-dom` prints. The frame is needed because
//! headless Chromium makes no window narrower than 500 px; inside the
//! frame the mail lays out at the width asked for, as in a phone's mail
//! app (scrollbars hidden: a phone's take no room). Screenshots are of the
//! same page, cut to the frame's size.
//!
//! Each call starts one Chromium (about a second): measure what a test
//! needs in one call. The browser gets no network (the background
//! services that would try to reach one are turned off) and a fresh
//! profile each time; it runs without its sandbox, as root in CI.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one Chromium run may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// headless Chromium's narrowest window.
const MIN_WINDOW_WIDTH: u32 = 500;

/// More than headless Chromium's window keeps of its height for itself
/// (about 150 px), so that the frame is all on the screen.
const WINDOW_SPARE_HEIGHT: u32 = 400;

/// What [`measure`] reports the bottom of.
#[derive(Debug, Clone, Copy)]
pub enum Marker<'a> {
    /// The element with this `id`.
    Id(&'a str),
    /// The first text that contains this (within one text node).
    Text(&'a str),
}

/// Facts about a page laid out at a width, in CSS pixels.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct PageFacts {
    /// `window.innerWidth`: the width asked for.
    pub inner_width: f64,
    /// `document.documentElement.scrollWidth`: wider than `inner_width`
    /// when something makes the page scroll sideways.
    pub scroll_width: f64,
    /// The right edge of the element that reaches furthest right.
    pub widest_right: f64,
    /// That element: its tag and the start of its text.
    pub widest: String,
    /// The height of the whole page.
    pub height: f64,
    /// The bottom of the marker, from the top of the page (None: not found).
    pub marker_bottom: Option<f64>,
}

impl PageFacts {
    /// Whether nothing is wider than the viewport (half a pixel of
    /// rounding allowed).
    pub fn fits_width(&self) -> bool {
        self.scroll_width <= self.inner_width && self.widest_right <= self.inner_width + 0.5
    }
}

/// `html` laid out at `width` × `height`, with the bottom of `marker`.
pub fn measure(html: &str, width: u32, height: u32, marker: Marker<'_>) -> PageFacts {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("page.html");
    fs::write(&page, frame_page(html, width, height, Some(marker))).expect("write page");
    let out = chromium(
        dir.path(),
        &page,
        width,
        height,
        &["--dump-dom".to_string()],
    );
    let dom = String::from_utf8_lossy(&out);
    let json = dom
        .split_once("<pre id=\"facts\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(facts, _)| {
            facts
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .unwrap_or_else(|| panic!("chromium printed no facts; its DOM:\n{dom}"));
    let facts: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("facts {json:?}: {e}"));
    if let Some(error) = facts.get("error") {
        panic!("the measuring script failed: {error}");
    }
    serde_json::from_value(facts).unwrap_or_else(|e| panic!("facts {json}: {e}"))
}

/// A PNG of the top `width` × `height` of `html` as a phone shows it,
/// written to `path`.
pub fn screenshot(html: &str, width: u32, height: u32, path: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("page.html");
    fs::write(&page, frame_page(html, width, height, None)).expect("write page");
    let shot = dir.path().join("shot.png");
    chromium(
        dir.path(),
        &page,
        width,
        height,
        &[format!("--screenshot={}", shot.display())],
    );
    let png = fs::read(&shot).expect("chromium wrote no screenshot");
    fs::write(path, crop_png(&png, width, height))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A text/plain part as a phone's mail app shows it: wrapped at the
/// screen's edge (long words too), in the system's proportional font.
pub fn text_part_as_html(text: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head><body style=\"margin:0\"><pre style=\"white-space:pre-wrap;word-wrap:break-word;font-family:-apple-system,Roboto,sans-serif;font-size:16px;margin:8px\">{}</pre></body></html>\n",
        escape(text)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Our page: `html` in a frame of `width` × `height` at the top left, and,
/// with a marker, the script that measures it once all has loaded.
fn frame_page(html: &str, width: u32, height: u32, marker: Option<Marker<'_>>) -> String {
    let script = match marker {
        None => String::new(),
        Some(m) => {
            let (kind, value) = match m {
                Marker::Id(id) => ("id", id),
                Marker::Text(t) => ("text", t),
            };
            let marker = serde_json::json!({ "kind": kind, "value": value });
            format!("<script>\nvar MARKER = {marker};\n{MEASURE}</script>\n")
        }
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"margin:0;background:#ffffff\">\n<iframe id=\"mail\" style=\"display:block;border:0;width:{width}px;height:{height}px\" srcdoc=\"{}\"></iframe>\n{script}</body></html>\n",
        escape(html)
    )
}

/// Measures the frame's page when everything has loaded and appends the
/// facts (or the error) as JSON in `<pre id="facts">`.
const MEASURE: &str = r#"
window.addEventListener('load', function () {
  var facts;
  try {
    var frame = document.getElementById('mail');
    var w = frame.contentWindow, d = frame.contentDocument;
    var widest = 0, which = '';
    var all = d.body ? d.body.getElementsByTagName('*') : [];
    for (var i = 0; i < all.length; i++) {
      var r = all[i].getBoundingClientRect();
      if (r.width > 0 && r.right > widest) {
        widest = r.right;
        which = all[i].tagName.toLowerCase() + ': ' + (all[i].textContent || '').trim().slice(0, 60);
      }
    }
    var bottom = null;
    if (MARKER.kind === 'id') {
      var el = d.getElementById(MARKER.value);
      if (el) bottom = el.getBoundingClientRect().bottom + w.scrollY;
    } else {
      var walk = d.createTreeWalker(d.body, NodeFilter.SHOW_TEXT);
      for (var n = walk.nextNode(); n; n = walk.nextNode()) {
        var at = n.data.indexOf(MARKER.value);
        if (at >= 0) {
          var range = d.createRange();
          range.setStart(n, at);
          range.setEnd(n, at + MARKER.value.length);
          bottom = range.getBoundingClientRect().bottom + w.scrollY;
          break;
        }
      }
    }
    facts = {
      inner_width: w.innerWidth,
      scroll_width: d.documentElement.scrollWidth,
      widest_right: widest,
      widest: which,
      height: d.documentElement.scrollHeight,
      marker_bottom: bottom
    };
  } catch (e) {
    facts = { error: String(e) };
  }
  var pre = document.createElement('pre');
  pre.id = 'facts';
  pre.textContent = JSON.stringify(facts);
  document.body.appendChild(pre);
});
"#;

/// Runs Chromium on `page` with `args` and returns what it printed.
fn chromium(dir: &Path, page: &Path, width: u32, height: u32, args: &[String]) -> Vec<u8> {
    // The window is larger than the frame: headless Chromium's window
    // takes some of its height for itself.
    let window = format!(
        "--window-size={},{}",
        width.max(MIN_WINDOW_WIDTH),
        height + WINDOW_SPARE_HEIGHT
    );
    let profile = format!("--user-data-dir={}", dir.join("profile").display());
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            // Time to lay out and run the measuring script before the DOM
            // is printed or the picture taken.
            "--virtual-time-budget=2000",
        ])
        .arg(&profile)
        .arg(&window)
        .args(args)
        .arg(format!("file://{}", page.display()))
        .env("HOME", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromium: {e} (scripts/install-deps installs Debian's chromium)")
        });
    let deadline = Instant::now() + PATIENCE;
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {PATIENCE:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().expect("chromium's output");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The top left `width` × `height` of a PNG, as a PNG.
fn crop_png(png_bytes: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .expect("chromium's PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "an 8-bit PNG");
    let (w, h) = (width.min(info.width), height.min(info.height));
    let mut out = Vec::with_capacity((w * h) as usize * channels);
    for row in 0..h as usize {
        let start = row * info.line_size;
        out.extend_from_slice(&buf[start..start + w as usize * channels]);
    }
    let mut png_out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_out, w, h);
        enc.set_color(info.color_type);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::High);
        let mut writer = enc.write_header().expect("PNG header");
        writer.write_image_data(&out).expect("PNG data");
    }
    png_out
}
