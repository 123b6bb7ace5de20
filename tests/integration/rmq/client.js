#!/usr/bin/env node
/*
 * A RocketMQ application that no one on the Ferry team wrote: ali-ons, the
 * pure-JavaScript RocketMQ 4.x client, driven from the integration tests.
 *
 *   client.js produce --ns ADDR --topic T --count N [--prefix P] [--tags A,B] [--inflight N]
 *                     [--delay-level L]
 *       one JSON line per message, in input order:
 *       {"i","body","tag","key","t","status","msgId","queueId","queueOffset","broker"}
 *   client.js consume --ns ADDR --topic T --group G [--expr E] [--from first|last]
 *                     [--fail-once BODY] [--max N] [--idle-exit-ms MS] [--handler-delay-ms MS]
 *       one JSON line per message received:
 *       {"t","body","tags","keys","msgId","reconsumeTimes","retryTopic","originMsgId","queueId","queueOffset","broker","from"}
 *       where "from" is the broker address of the pull that brought it, and
 *       {"allocated": [...], "members": N} after each rebalance of the topic; exits
 *       after --max messages, or once idle for --idle-exit-ms after the first.
 *       SIGTERM closes the consumer (offsets committed) and exits.
 */
'use strict';
const path = require('path');
const ons = require(path.join(__dirname, 'node_modules', 'ali-ons'));
const MQClientAPI = require(path.join(__dirname, 'node_modules', 'ali-ons', 'lib', 'mq_client_api'));

function parse(argv) {
  const o = { _: argv[0] };
  for (let i = 1; i < argv.length; i += 2) o[argv[i].replace(/^--/, '')] = argv[i + 1];
  return o;
}

const quiet = { info() {}, warn() {}, debug() {}, error(e) { process.stderr.write(`ali-ons: ${e && e.message || e}\n`); } };
const out = obj => process.stdout.write(JSON.stringify(obj) + '\n');

async function produce(o) {
  const p = new ons.Producer({ httpclient: {}, nameSrv: o.ns, producerGroup: o.group || 'FerryTestPG',
    instanceName: `p${process.pid}`, logger: quiet });
  await p.ready();
  const count = Number(o.count);
  const tags = (o.tags || 'TagA').split(',');
  const inflight = Number(o.inflight || 32);
  const prefix = o.prefix || 'm';
  const results = new Array(count);
  let next = 0, printed = 0;
  async function one(i) {
    const body = `${prefix}-${i}`;
    const tag = tags[i % tags.length];
    const key = `key-${prefix}-${i}`;
    const msg = new ons.Message(o.topic, tag, body);
    msg.keys = [key];
    if (o['delay-level']) msg.delayTimeLevel = Number(o['delay-level']);
    try {
      const r = await p.send(msg);
      results[i] = { i, body, tag, key, t: Date.now(), status: r.sendStatus, msgId: r.msgId,
                     queueId: r.messageQueue.queueId, queueOffset: r.queueOffset, broker: r.messageQueue.brokerName };
    } catch (e) {
      results[i] = { i, body, tag, key, status: 'SEND_FAILED', error: String(e.message || e) };
    }
    while (printed < count && results[printed]) out(results[printed++]);
  }
  async function worker() { while (next < count) await one(next++); }
  await Promise.all(Array.from({ length: Math.min(inflight, count) }, worker));
  await p.close();
}

async function consume(o) {
  let from = '';
  const orig = MQClientAPI.prototype.pullMessage;
  MQClientAPI.prototype.pullMessage = async function (addr, header, timeout) {
    const r = await orig.call(this, addr, header, timeout);
    for (const m of r.msgFoundList) m.__from = addr;
    return r;
  };
  /* The default allocation, reporting what this client took, so a test can
   * wait for a group's rebalance to settle before it produces. */
  const Avg = require(path.join(__dirname, 'node_modules', 'ali-ons', 'lib', 'consumer', 'rebalance',
    'allocate_message_queue_averagely'));
  const avg = new Avg();
  const strategy = { get name() { return avg.name; },
    allocate(group, cid, mqAll, cidAll) {
      const r = avg.allocate(group, cid, mqAll, cidAll);
      if (mqAll.length && mqAll[0].topic === o.topic)
        out({ allocated: r.map(q => `${q.brokerName}/${q.queueId}`).sort(), members: cidAll.length });
      return r;
    } };
  const c = new ons.Consumer({
    allocateMessageQueueStrategy: strategy,
    httpclient: {}, nameSrv: o.ns, consumerGroup: o.group, instanceName: `c${process.pid}`,
    consumeFromWhere: o.from === 'last' ? 'CONSUME_FROM_LAST_OFFSET' : 'CONSUME_FROM_FIRST_OFFSET',
    pollNameServerInteval: 1000, heartbeatBrokerInterval: 1000, rebalanceInterval: 1000,
    persistConsumerOffsetInterval: 1000, brokerSuspendMaxTimeMillis: 2000,
    consumerTimeoutMillisWhenSuspend: 10000, pullTimeDelayMillsWhenException: 500, logger: quiet,
  });
  c.on('error', e => process.stderr.write(`consumer error: ${e.message}\n`));
  const max = Number(o.max || 0), idle = Number(o['idle-exit-ms'] || 0), delay = Number(o['handler-delay-ms'] || 0);
  let got = 0, last = 0, closing = false, failed = false;
  async function finish() {
    if (closing) return;
    closing = true;
    try { await c.close(); } catch (e) { process.stderr.write(`close: ${e.message}\n`); }
    process.exit(0);
  }
  process.on('SIGTERM', finish);
  c.subscribe(o.topic, o.expr || '*', async msg => {
    const body = msg.body ? msg.body.toString() : '';
    if (o['fail-once'] === body && !failed) {
      failed = true;
      out({ failed: body, msgId: msg.msgId, t: Date.now() });
      throw new Error(`handler fails once for ${body}`);
    }
    if (delay) await new Promise(r => setTimeout(r, delay));
    got++;
    last = Date.now();
    out({ t: Date.now(), body, tags: msg.tags || '', keys: msg.keys || '', msgId: msg.msgId, reconsumeTimes: msg.reconsumeTimes,
          retryTopic: msg.retryTopic || '', originMsgId: msg.originMessageId || '', queueId: msg.queueId,
          queueOffset: msg.queueOffset, broker: msg.storeHost, from: msg.__from || '' });
    if (max && got >= max) setTimeout(finish, 100);
  });
  if (idle) setInterval(() => { if (got && Date.now() - last > idle) finish(); }, 100);
}

const o = parse(process.argv.slice(2));
(o._ === 'produce' ? produce(o).then(() => process.exit(0)) : consume(o)).catch(e => { process.stderr.write(`fatal: ${e.stack || e}\n`); process.exit(2); });
