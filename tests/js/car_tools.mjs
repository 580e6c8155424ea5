// CAR files with the IPFS JavaScript stack, independently of cas.
//
//   node car_tools.mjs read FILE.car [PATH...]
//     Read the CAR with @ipld/car, re-hash every block with the hash its CID
//     names (sha2-256 from multiformats, BLAKE3 from @noble/hashes), then walk
//     each root with ipfs-unixfs-exporter over those blocks alone.
//     stdout: {"roots": [...], "blocks": N, "entries": [{path, type, size,
//              sha256}], "paths": {PATH: sha256}} (sha256 of a file's content,
//     hex; each PATH looked up below the first root as the exporter resolves
//     paths: through HAMT shards by the name's hash); exit 1 with the
//     reason on stderr if a block does not match its CID or is missing.
//
//   node car_tools.mjs make DIR FILE.car PROFILE SHARD_THRESHOLD [meta]
//     Import DIR with ipfs-unixfs-importer (PROFILE: 'unixfs-v0-2015', kubo's
//     classic CIDv0 + dag-pb leaves, or 'unixfs-v1-2025'; directories bigger
//     than SHARD_THRESHOLD bytes become HAMT shards; with 'meta', each entry's
//     mode and mtime too, as --preserve-mode/--preserve-mtime) and write the
//     blocks as a CARv1 with @ipld/car's writer. stdout: the root CID.
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CarBlockIterator, CarWriter } from '@ipld/car'
import { blake3 } from '@noble/hashes/blake3.js'
import { exporter, recursive } from 'ipfs-unixfs-exporter'
import { importer } from 'ipfs-unixfs-importer'
import { sha256 } from 'multiformats/hashes/sha2'

const SHA2_256 = 0x12
const BLAKE3 = 0x1e

function equalBytes (a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i])
}

async function sha256Of (entry) {
  const hash = createHash('sha256')
  let size = 0
  for await (const piece of entry.content()) {
    hash.update(piece)
    size += piece.length
  }
  return { size, sha256: hash.digest('hex') }
}

async function read (path, ...lookups) {
  const blocks = new Map()
  const iterator = await CarBlockIterator.fromIterable(createReadStream(path))
  const roots = await iterator.getRoots()
  for await (const { cid, bytes } of iterator) {
    const code = cid.multihash.code
    let digest
    if (code === SHA2_256) digest = (await sha256.digest(bytes)).digest
    else if (code === BLAKE3) digest = blake3(bytes)
    else throw new Error(`block ${cid}: unknown hash 0x${code.toString(16)}`)
    if (!equalBytes(digest, cid.multihash.digest)) throw new Error(`block ${cid} does not match its hash`)
    blocks.set(cid.toString(), bytes)
  }
  const store = {
    async * get (cid) {
      const bytes = blocks.get(cid.toString())
      if (bytes === undefined) throw new Error(`missing block ${cid}`)
      yield bytes
    }
  }
  const entries = []
  for (const root of roots) {
    for await (const listed of recursive(root, store)) {
      const entry = await exporter(listed.cid, store)
      const item = { path: listed.path, type: entry.type, cid: entry.cid.toString() }
      if (entry.type === 'file' || entry.type === 'raw') Object.assign(item, await sha256Of(entry))
      entries.push(item)
    }
  }
  const paths = {}
  for (const lookup of lookups) {
    paths[lookup] = (await sha256Of(await exporter(`${roots[0]}/${lookup}`, store))).sha256
  }
  return { roots: roots.map(String), blocks: blocks.size, entries, paths }
}

function metadata (path) {
  const stat = statSync(path, { bigint: true })
  return { mode: Number(stat.mode) & 0o7777, mtime: { secs: stat.mtimeNs / 1000000000n, nsecs: Number(stat.mtimeNs % 1000000000n) } }
}

function * walk (dir, base, meta) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name)
    const extra = meta ? metadata(path) : {}
    if (statSync(path).isDirectory()) {
      yield { path: relative(base, path), ...extra }
      yield * walk(path, base, meta)
    } else {
      yield { path: relative(base, path), content: createReadStream(path), ...extra }
    }
  }
}

async function make (dir, out, profile, threshold, meta) {
  const blocks = []
  const store = { async put (cid, bytes) { blocks.push({ cid, bytes }); return cid } }
  let root
  const options = { profile, shardSplitThresholdBytes: Number(threshold), wrapWithDirectory: true }
  for await (const entry of importer(walk(dir, dir, meta === 'meta'), store, options)) root = entry.cid
  const { writer, out: car } = CarWriter.create([root])
  const written = pipeline(Readable.from(car), createWriteStream(out))
  for (const block of blocks) await writer.put(block)
  await writer.close()
  await written
  return root.toString()
}

const [command, ...args] = process.argv.slice(2)
try {
  if (command === 'read') process.stdout.write(JSON.stringify(await read(...args)))
  else if (command === 'make') process.stdout.write(await make(...args))
  else throw new Error(`unknown command ${command}`)
} catch (err) {
  process.stderr.write(`${err.message}\n`)
  process.exit(1)
}
