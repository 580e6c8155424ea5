// Decode a cas file DAG with the IPFS JavaScript stack, independently of cas.
//
// stdin:  {"root": "<cid>", "blocks": {"<cid>": "<base64 bytes>", ...}}
// stdout: {"nodes": {"<cid>": {type, links: [{hash, name, tsize}], blockSizes,
//          fileSize, reencodes, remarshals}}, "content": "<base64>"}
//
// Every dag-pb block is decoded with @ipld/dag-pb (a strict decoder) and its
// Data with ipfs-unixfs; "reencodes"/"remarshals" say whether those libraries
// write back exactly the bytes they read, i.e. whether our encoding is the
// canonical one they would produce. "content" is the file reassembled by
// walking the links in order, using nothing but what those libraries decoded.
import { readFileSync } from 'node:fs'
import * as dagPB from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import { CID } from 'multiformats/cid'

const RAW = 0x55
const input = JSON.parse(readFileSync(0, 'utf8'))
const blocks = new Map(
  Object.entries(input.blocks).map(([cid, b64]) => [cid, new Uint8Array(Buffer.from(b64, 'base64'))])
)
const nodes = {}

function equalBytes (a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i])
}

function describe (cidText, bytes) {
  const node = dagPB.decode(bytes)
  const unixfs = UnixFS.unmarshal(node.Data)
  nodes[cidText] = {
    type: unixfs.type,
    links: node.Links.map((link) => ({
      hash: link.Hash.toString(),
      name: link.Name ?? null,
      tsize: link.Tsize ?? null
    })),
    blockSizes: unixfs.blockSizes.map(Number),
    fileSize: Number(unixfs.fileSize()),
    reencodes: equalBytes(dagPB.encode(dagPB.prepare(node)), bytes),
    remarshals: equalBytes(unixfs.marshal(), node.Data)
  }
  return { node, unixfs }
}

function assemble (cidText, out) {
  const bytes = blocks.get(cidText)
  if (bytes === undefined) throw new Error(`missing block ${cidText}`)
  const cid = CID.parse(cidText)
  if (cid.code === RAW) {
    out.push(bytes)
    return
  }
  if (cid.code !== dagPB.code) throw new Error(`unexpected codec ${cid.code}`)
  const { node, unixfs } = describe(cidText, bytes)
  if (unixfs.data) out.push(unixfs.data)
  for (const link of node.Links) assemble(link.Hash.toString(), out)
}

const parts = []
assemble(input.root, parts)
process.stdout.write(JSON.stringify({
  nodes,
  content: Buffer.concat(parts).toString('base64')
}))
