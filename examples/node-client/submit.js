#!/usr/bin/env node
// Submit downloaderApp.download(URL, NAME) to the cluster over AMQP and print its result.
//
//   node submit.js URL NAME [--overwrite] [--timeout SECONDS]
//
// Speaks Celery's message protocol 2 itself, with amqplib: a JSON message to the task exchange,
// the result read from a reply queue of its own, as Celery's rpc:// result backend sends it.
// It declares nothing that the cluster owns (the task queue is only checked, which needs no
// right), so it runs with the least-privilege user of the cluster's client hosts.
//
// Where to connect: BROKER_URL (amqps://USER:PASSWORD@HOST:5671/VHOST, several separated by ";",
// tried in turn) and BROKER_CA (the CA file), or else the app's own configuration on this host
// (DOWNLOADER_CONFIG, default /etc/downloader/downloader.conf: broker_url, broker_ca_file).
//
// Exit status: 0 the task succeeded; 1 it failed; 2 usage or configuration error; 3 no result
// within the timeout; 5 no broker could be reached; 7 the broker refused (no such queue, no right).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const amqp = require("amqplib");

const TASK = "downloaderApp.download";
const DEFAULT_CONFIG = "/etc/downloader/downloader.conf";

function fail(code, message) {
  process.stderr.write(`downloader-submit: ${message}\n`);
  process.exit(code);
}

// A broker URL with its password hidden, for messages.
function masked(url) {
  return url.replace(/(:\/\/[^:/@]*:)[^@]*@/, "$1***@");
}

function parseArgs(argv) {
  const args = { positional: [], overwrite: false, timeout: 60 };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--overwrite") args.overwrite = true;
    else if (argv[i] === "--timeout") {
      args.timeout = Number(argv[(i += 1)]);
      if (!(args.timeout > 0) || !Number.isFinite(args.timeout)) fail(2, "--timeout needs a positive number of seconds");
    } else if (argv[i].startsWith("--")) fail(2, `unknown option ${argv[i]}`);
    else args.positional.push(argv[i]);
  }
  if (args.positional.length !== 2) fail(2, "usage: submit.js URL NAME [--overwrite] [--timeout SECONDS]");
  return args;
}

// The [downloader] section of the app's configuration file: key = value lines.
function readConfig(path) {
  let text;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (err) {
    fail(2, `cannot read ${path} (${err.code}): set BROKER_URL and BROKER_CA, or run as a member of its group`);
  }
  const values = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) section = header[1];
    else if (section === "downloader" && line.includes("=")) {
      const at = line.indexOf("=");
      values[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  }
  return values;
}

// Where to connect: a list of amqp(s) URLs, and the CA to verify the brokers against.
function brokers() {
  let urls = process.env.BROKER_URL;
  let ca = process.env.BROKER_CA;
  if (!urls) {
    const config = readConfig(process.env.DOWNLOADER_CONFIG || DEFAULT_CONFIG);
    if (!config.broker_url) fail(2, "no broker_url in the app's configuration");
    ca = ca || config.broker_ca_file || "";
    // The app's URLs are Celery's (pyamqp://); with a CA, AMQP runs over TLS (amqps://).
    urls = config.broker_url.replace(/\b(py)?amqps?:\/\//g, ca ? "amqps://" : "amqp://");
  }
  const list = urls.split(";").map((u) => u.trim()).filter(Boolean);
  if (!list.length) fail(2, "no broker URL");
  let caData;
  if (ca) {
    try {
      caData = fs.readFileSync(ca);
    } catch (err) {
      fail(2, `cannot read the CA file ${ca} (${err.code})`);
    }
  }
  return { list, ca: caData };
}

// The first broker that accepts the connection (the broker's certificate is verified against
// the CA and must name the host of the URL: amqplib passes it as the TLS server name).
async function connect({ list, ca }) {
  const errors = [];
  for (const url of list) {
    try {
      return await amqp.connect(url, { ca: ca ? [ca] : undefined, timeout: 10000 });
    } catch (err) {
      if (/ACCESS_REFUSED|403/.test(String(err.message))) fail(7, `${masked(url)}: ${err.message}`);
      errors.push(`${masked(url)}: ${err.message}`);
    }
  }
  fail(5, `no broker could be reached:\n  ${errors.join("\n  ")}`);
}

// Celery's message protocol 2: the task's name, id and bookkeeping in the headers, the
// arguments as [args, kwargs, embed] in a JSON body.
function taskMessage(id, args, kwargs, replyTo) {
  const headers = {
    lang: "js",
    task: TASK,
    id,
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: id,
    parent_id: null,
    argsrepr: JSON.stringify(args),
    kwargsrepr: JSON.stringify(kwargs),
    origin: `${process.pid}@${os.hostname()}`,
    ignore_result: false,
  };
  const body = Buffer.from(JSON.stringify([args, kwargs, { callbacks: null, errbacks: null, chain: null, chord: null }]));
  const properties = {
    headers,
    correlationId: id,
    replyTo,
    contentType: "application/json",
    contentEncoding: "utf-8",
    deliveryMode: 2,
    priority: 0,
  };
  return { body, properties };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [url, name] = args.positional;
  const queue = process.env.CELERY_QUEUE || "celery";
  const conn = await connect(brokers());
  let timer;
  try {
    const channel = await conn.createConfirmChannel();
    const refused = new Promise((_, reject) => channel.on("error", reject));
    const run = async () => {
      // The task queue must exist (the workers create it): a passive check, which needs no
      // right, so that a task is never published to an exchange that would drop it.
      await channel.checkQueue(queue);
      // The reply queue: a UUID name (the only name a client's user may create), exclusive to
      // this connection (nobody else may read it) and gone with it.
      const replyTo = crypto.randomUUID();
      await channel.assertQueue(replyTo, { exclusive: true, durable: false, autoDelete: true });
      const id = crypto.randomUUID();
      const done = new Promise((resolve) => {
        channel.consume(
          replyTo,
          (message) => {
            if (!message || message.properties.correlationId !== id) return;
            const state = JSON.parse(message.content.toString("utf8"));
            if (state.status === "SUCCESS" || state.status === "FAILURE") resolve(state);
          },
          { noAck: true },
        );
      });
      const kwargs = args.overwrite ? { overwrite: true } : {};
      const { body, properties } = taskMessage(id, [url, name], kwargs, replyTo);
      // The task exchange is named after the queue; its routing key too. Publisher confirms:
      // the task is stored by RabbitMQ once waitForConfirms returns.
      channel.publish(queue, queue, body, properties);
      await channel.waitForConfirms();
      process.stderr.write(`downloader-submit: sent task ${id}\n`);
      const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve({ status: "TIMEOUT", task_id: id }), args.timeout * 1000);
      });
      return Promise.race([done, timeout]);
    };
    const state = await Promise.race([run(), refused]);
    clearTimeout(timer);
    if (state.status === "TIMEOUT") fail(3, `task ${state.task_id} did not finish within ${args.timeout} s`);
    process.stdout.write(`${JSON.stringify({ task_id: state.task_id, state: state.status, result: state.result })}\n`);
    return state.status === "SUCCESS" ? 0 : 1;
  } catch (err) {
    clearTimeout(timer);
    const text = String(err && err.message);
    if (/NOT_FOUND|ACCESS_REFUSED|PRECONDITION_FAILED/.test(text)) fail(7, `the broker refused: ${text}`);
    throw err;
  } finally {
    await conn.close().catch(() => {});
  }
}

main().then(
  (code) => process.exit(code),
  (err) => fail(5, String((err && err.stack) || err)),
);
