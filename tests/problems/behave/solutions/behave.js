// The verdict matrix's program in JavaScript (see tests/problems/README.md).
const { Worker, isMainThread } = require("worker_threads");

function burn() { let n = 0; for (;;) n++; }

if (!isMainThread) burn();
const [mode, ...args] = require("fs").readFileSync(0, "utf8").trim().split(/\s+/);
const [a, b] = [Number(args[0] || 0), Number(args[1] || 0)];
if (mode === "sum") console.log(a + b);
else if (mode === "wrong") console.log(a + b + 1);
else if (mode === "trailing") process.stdout.write(`${a + b}   \n\n\n`);
else if (mode === "spin") burn();
else if (mode === "threads") { for (let i = 0; i < 4; i++) new Worker(__filename); }
else if (mode === "sleep") setTimeout(() => {}, 100000);
else if (mode === "alloc") { const keep = []; for (;;) keep.push(Buffer.alloc(16 << 20, 1)); }
else if (mode === "flood") {
  const line = "flood flood flood flood flood flood flood flood\n".repeat(1000);
  const more = () => { while (process.stdout.write(line)); process.stdout.once("drain", more); };
  more();
}
else if (mode === "crash") process.kill(process.pid, "SIGSEGV");
else if (mode === "exit") process.exit(4);
