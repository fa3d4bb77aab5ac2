//! The portal's only stylesheet, compiled into the binary: hospital networks are closed, so
//! nothing is fetched from a CDN. Colours keep at least 4.5:1 contrast on their background,
//! and focus is always visible for keyboard users.

pub const CSS: &str = r#"
:root { --fg: #1a1a1a; --bg: #ffffff; --muted: #4a4a4a; --accent: #0b4f8a; --ok: #1d6b35;
        --err: #a4161a; --line: #c8c8c8; --panel: #f3f6f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus, button:focus, input:focus, summary:focus { outline: 3px solid #f2a900; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: 1rem; background: #fff; padding: .5rem; z-index: 10; }
header.top { background: var(--accent); color: #fff; padding: .6rem 1.2rem; display: flex;
             flex-wrap: wrap; align-items: center; gap: 1.2rem; }
header.top .brand { font-weight: 700; font-size: 1.1rem; margin-right: auto; }
header.top nav a { color: #fff; margin-right: 1rem; text-decoration: underline; }
header.top nav a[aria-current="page"] { font-weight: 700; text-decoration: none;
             border-bottom: 3px solid #fff; }
header.top form { margin: 0; }
header.top button { background: #fff; color: var(--accent); border: 0; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.2rem 3rem; }
h1 { font-size: 1.6rem; margin: .8rem 0; }
h2 { font-size: 1.25rem; margin: 1.4rem 0 .6rem; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
         padding: 1rem 1.2rem; margin: 1rem 0; }
label { display: block; font-weight: 600; margin: .6rem 0 .2rem; }
input[type=text], input[type=password] { font: inherit; padding: .45rem .6rem; width: 100%;
         max-width: 22rem; border: 2px solid #767676; border-radius: 4px; }
input[type=file] { font: inherit; padding: .3rem 0; }
button { font: inherit; font-weight: 600; padding: .5rem 1.2rem; border-radius: 4px;
         border: 2px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
button.secondary { background: #fff; color: var(--accent); }
fieldset { border: 1px solid var(--line); border-radius: 4px; margin: .8rem 0; }
legend { font-weight: 600; }
.hint { color: var(--muted); font-size: .95rem; }
.error { border-left: 6px solid var(--err); background: #fdecea; padding: .8rem 1rem; }
.error h2 { color: var(--err); margin-top: 0; }
.result { border-left: 6px solid var(--ok); }
.label-big { font-size: 1.5rem; font-weight: 700; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.preview img { width: 168px; height: 168px; image-rendering: pixelated;
               border: 1px solid var(--line); background: #000; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { text-align: left; padding: .3rem .7rem; border-bottom: 1px solid var(--line); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.bars { list-style: none; padding: 0; margin: .5rem 0; }
ul.bars li { display: grid; grid-template-columns: 12rem 16rem 5rem; gap: .6rem;
             align-items: center; margin: .3rem 0; }
ul.bars li.top { font-weight: 700; }
ul.bars meter { width: 16rem; height: 1.2rem; }
svg.chart { max-width: 100%; height: auto; background: #fff; border: 1px solid var(--line); }
footer { color: var(--muted); font-size: .9rem; text-align: center; padding: 1rem; }
"#;
