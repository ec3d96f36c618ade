// The playground: a form that POSTs /v1/submissions, then follows the submission's
// Server-Sent Events and fills the verdict table as each test ends. The stream is read
// with fetch (not EventSource, which cannot send an Authorization header); if it breaks,
// the page polls the submission instead. Every URL is relative: the page works under
// any prefix a proxy gives the API.
"use strict";

const $ = (id) => document.getElementById(id);
const MIB = 1024 * 1024;
const A_PLUS_B = "a, b = map(int, input().split())\nprint(a + b)\n";
const EXAMPLES = {
  ac: { source: A_PLUS_B },
  wa: { source: "a, b = map(int, input().split())\nprint(a - b)\n" },
  tle: { source: "while True:\n    pass\n" },
  mle: { source: "block = b'x' * (512 << 20)\nprint(len(block))\n", memory: "64M" },
};
const EXAMPLE_TESTS = [["1 2\n", "3\n"], ["40 2\n", "42\n"]];
const VERDICT_WORDS = {
  AC: "accepted", WA: "wrong answer", TLE: "time limit exceeded", MLE: "memory limit exceeded",
  OLE: "output limit exceeded", RE: "runtime error", CE: "compilation error", IE: "internal error",
};

const keyInput = $("key");
keyInput.value = localStorage.getItem("cellblock.key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("cellblock.key", keyInput.value.trim());
  loadLanguages();
});

function headers(json) {
  const h = {};
  const key = keyInput.value.trim();
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// What the API said went wrong, in one readable block (422 details name the field).
async function problem(response) {
  let body;
  try { body = await response.json(); } catch (_) { return `HTTP ${response.status}`; }
  const detail = body.detail !== undefined ? body.detail : body;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("\n");
  }
  return `HTTP ${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`;
}

async function loadLanguages() {
  const select = $("language");
  const chosen = select.value || "python3";
  const response = await fetch("v1/languages", { headers: headers(false) });
  if (!response.ok) {
    showError(await problem(response));
    return;
  }
  select.replaceChildren();
  for (const lang of await response.json()) {
    // The version line workers report ("Python 3.11.2", "gcc (Debian 12.2.0-14) 12.2.0"):
    // its first dotted number is what a person looks for.
    const number = lang.version && (lang.version.match(/\d+(\.\d+)+/) || [lang.version])[0];
    const label = lang.name + (number ? ` (${number})` : "") +
      (lang.workers ? "" : " (no worker has it)");
    const option = element("option", label);
    option.value = lang.id;
    select.append(option);
  }
  select.value = chosen;
  await loadImages();
}

async function loadImages() {
  // The images a submission may name (GET /v1/images); none: only the language's own.
  const select = $("image");
  const chosen = select.value;
  const response = await fetch("v1/images", { headers: headers(false) });
  if (!response.ok) return;  // the languages' request has said why
  const refs = (await response.json()).map((image) => image.ref);
  const own = element("option", "the language's own");
  own.value = "";
  select.replaceChildren(own);
  for (const ref of refs) {
    const option = element("option", ref);
    option.value = ref;
    select.append(option);
  }
  select.value = refs.includes(chosen) ? chosen : "";
  select.disabled = refs.length === 0;
}

function addTest(input, output) {
  const row = element("tr");
  for (const value of [input, output]) {
    const cell = element("td");
    const area = element("textarea");
    area.rows = 2;
    area.spellcheck = false;
    area.value = value || "";
    cell.append(area);
    row.append(cell);
  }
  const remove = element("button", "remove");
  remove.type = "button";
  remove.addEventListener("click", () => row.remove());
  const cell = element("td");
  cell.append(remove);
  row.append(cell);
  $("tests").tBodies[0].append(row);
}

function loadExample(name) {
  const example = EXAMPLES[name];
  if (!example) return;
  $("language").value = "python3";
  $("source").value = example.source;
  $("memory").value = example.memory || "256M";
  $("tests").tBodies[0].replaceChildren();
  for (const [input, output] of EXAMPLE_TESTS) addTest(input, output);
}

function request() {
  const body = { language: $("language").value, source: $("source").value };
  const tests = [...$("tests").tBodies[0].rows].map((row, i) => {
    const [input, output] = row.querySelectorAll("textarea");
    return { name: String(i + 1), input: input.value, output: output.value };
  });
  if (tests.length) body.tests = tests;
  else body.stdin = $("stdin").value;
  const limits = {};
  for (const name of ["time", "wall_time", "pids"]) {
    if ($(name).value) limits[name] = Number($(name).value);
  }
  if ($("memory").value.trim()) limits.memory = $("memory").value.trim();
  body.limits = limits;
  if ($("image").value) body.image = $("image").value;
  return body;
}

function showError(text) {
  $("outcome").hidden = false;
  $("error").hidden = false;
  $("error").textContent = text;
}

function resetOutcome() {
  $("outcome").hidden = false;
  $("error").hidden = true;
  $("compile").hidden = true;
  $("verdict").textContent = "";
  $("verdict").className = "verdict";
  $("summary").textContent = "";
  $("json").removeAttribute("href");
  $("results").tBodies[0].replaceChildren();
}

// The first line where the output differs from what was expected, marked in both.
function outputCell(test, expected) {
  const cell = element("td");
  const got = test.stdout || "";
  if (expected === undefined && !got && !test.stderr) return cell;
  const details = element("details");
  details.append(element("summary", test.verdict === "AC" ? "output" : "output and diff"));
  if (expected !== undefined) {
    const want = expected.replace(/\s+$/, "").split("\n");
    const have = got.replace(/\s+$/, "").split("\n");
    let line = 0;
    while (line < want.length && line < have.length && want[line].trimEnd() === have[line].trimEnd()) line++;
    const same = line === want.length && line === have.length;
    const pair = element("div", undefined, "diff");
    for (const [title, lines] of [["expected", want], ["got", have]]) {
      const column = element("div");
      column.append(element("b", title));
      const pre = element("pre");
      lines.forEach((text, i) => pre.append(element("span", text + "\n", !same && i === line ? "differs" : "")));
      column.append(pre);
      pair.append(column);
    }
    details.append(pair);
    if (!same) details.append(element("p", `first difference on line ${line + 1}`));
  } else {
    details.append(element("pre", got));
  }
  if (test.stderr) {
    details.append(element("b", "stderr"));
    details.append(element("pre", test.stderr));
  }
  cell.append(details);
  return cell;
}

function showTest(test, index, expected) {
  const body = $("results").tBodies[0];
  const row = element("tr");
  row.dataset.index = String(index);
  row.dataset.verdict = test.verdict;
  const exit = test.signal ? `signal ${test.signal}` : test.exit_code;
  const cells = [
    element("td", index + 1),
    element("td", test.name),
    element("td", test.verdict, `verdict ${test.verdict}`),
    element("td", test.time !== undefined ? test.time.toFixed(3) : ""),
    element("td", test.wall_time !== undefined ? test.wall_time.toFixed(3) : ""),
    element("td", test.memory !== undefined ? `${(test.memory / MIB).toFixed(1)} MiB` : ""),
    element("td", exit === null || exit === undefined ? "" : exit),
    element("td", test.oom_killed ? "yes" : "no"),
    outputCell(test, expected),
  ];
  cells[2].title = test.message || "";
  row.append(...cells);
  const old = body.querySelector(`tr[data-index="${index}"]`);
  if (old) old.replaceWith(row);
  else body.append(row);
}

function showResult(record, expected) {
  $("status").textContent = `submission ${record.id}: ${record.status}`;
  const json = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
  $("json").href = URL.createObjectURL(json);
  if (record.status === "failed") {
    showError(`not judged: ${record.error || "the service could not judge it"}`);
    return;
  }
  const result = record.result;
  if (!result) return;
  $("verdict").textContent = result.verdict;
  $("verdict").className = `verdict ${result.verdict}`;
  $("summary").textContent = `${VERDICT_WORDS[result.verdict] || ""}, score ${result.score} of ` +
    `${result.max_score}` + (result.message ? ` (${result.message})` : "");
  const compile = result.compile;
  if (compile && (compile.stdout || compile.stderr)) {
    $("compile").hidden = false;
    $("compile").querySelector("pre").textContent = (compile.stdout || "") + (compile.stderr || "");
    $("compile").open = result.verdict === "CE";
  }
  (result.tests || []).forEach((test, i) => showTest(test, i, expected[i]));
}

// Reads the event stream; resolves when `end` arrives, rejects if the stream breaks.
async function follow(id, expected) {
  const response = await fetch(`v1/submissions/${id}/events`, { headers: headers(false) });
  if (!response.ok || !response.body) throw new Error(await problem(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the event stream ended early");
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
      if (!data) continue; // a keepalive comment
      const event = JSON.parse(data);
      if (event.type === "status") $("status").textContent = `submission ${id}: ${event.status}`;
      if (event.type === "test") showTest(event.test, event.index, expected[event.index]);
      if (event.type === "end") {
        reader.cancel();
        return;
      }
    }
  }
}

async function poll(id) {
  for (;;) {
    const response = await fetch(`v1/submissions/${id}`, { headers: headers(false) });
    if (!response.ok) throw new Error(await problem(response));
    const record = await response.json();
    if (record.status === "done" || record.status === "failed") return record;
    $("status").textContent = `submission ${id}: ${record.status}`;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function judge(event) {
  event.preventDefault();
  resetOutcome();
  const body = request();
  const expected = (body.tests || []).map((t) => t.output);
  $("submit").disabled = true;
  try {
    const response = await fetch("v1/submissions", {
      method: "POST", headers: headers(true), body: JSON.stringify(body),
    });
    if (!response.ok) {
      showError(await problem(response));
      return;
    }
    const { id } = await response.json();
    $("status").textContent = `submission ${id}: queued`;
    try {
      await follow(id, expected);
    } catch (error) {
      $("status").textContent = `submission ${id}: following by polling (${error.message})`;
    }
    showResult(await poll(id), expected);
  } catch (error) {
    showError(String(error.message || error));
  } finally {
    $("submit").disabled = false;
  }
}

$("form").addEventListener("submit", judge);
$("add-test").addEventListener("click", () => addTest("", ""));
$("example").addEventListener("change", (e) => loadExample(e.target.value));
loadLanguages().then(() => {
  if (!$("source").value) loadExample("ac");
});
