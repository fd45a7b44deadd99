// GoTrue's email flows through the real @supabase/auth-js client, with the
// mails received by a real SMTP server (smtp-server, parsed by mailparser)
// on loopback.
//
// test/authjs.sh starts `keyshard serve --smtp-url smtp://127.0.0.1:$KEYSHARD_TEST_SMTP_PORT`
// and exports KEYSHARD_BASE_URL, KEYSHARD_ADMIN_TOKEN, KEYSHARD_TEST_SMTP_PORT and
// KEYSHARD_BACKEND_A/B. This file listens on that port as soon as it loads, then
// makes two tenants of its own through the platform API (one on each backend),
// configures them (confirmation mails on, mail limits relaxed) and runs every
// flow on both, reading each link and code from the mail received.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { AuthClient } from '@supabase/auth-js'
import { SMTPServer } from 'smtp-server'
import { simpleParser } from 'mailparser'

const BASE = process.env.KEYSHARD_BASE_URL
const ADMIN_TOKEN = process.env.KEYSHARD_ADMIN_TOKEN
const SMTP_PORT = Number(process.env.KEYSHARD_TEST_SMTP_PORT)
if (!BASE || !ADMIN_TOKEN || !SMTP_PORT) {
  throw new Error('set KEYSHARD_BASE_URL, KEYSHARD_ADMIN_TOKEN and KEYSHARD_TEST_SMTP_PORT (test/authjs.sh does)')
}
const BACKENDS = [process.env.KEYSHARD_BACKEND_A || 'sqlite', process.env.KEYSHARD_BACKEND_B || 'sqlite']
const RUN = `${process.pid}-${Date.now().toString(36)}`
const SITE = 'http://localhost:3000'
const PASSWORD = 'correct horse battery'
const REQUEST_TIMEOUT = 15_000 // every HTTP request of this file
const MAIL_TIMEOUT = 15_000 // the longest wait for one mail

// ---------------------------------------------------------------------------
// The SMTP server: every mail received, in order. A test takes a mail to an
// address (nextMail), which marks it taken; the last test checks that no
// mail arrived that no test asked for.

const received = [] // { rcpt: [address], mail: parsed, taken }
const waiters = new Set()

const smtp = new SMTPServer({
  // Loopback only, plain text: keyshard's client must not try STARTTLS with
  // smtp-server's self-signed certificate, and sends no AUTH.
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  logger: false,
  size: 1 << 20,
  closeTimeout: 2000, // close() ends lingering connections after this
  onData(stream, session, callback) {
    simpleParser(stream).then(
      (mail) => {
        received.push({ rcpt: session.envelope.rcptTo.map((r) => r.address.toLowerCase()), mail, taken: false })
        for (const w of waiters) w()
        callback()
      },
      (err) => callback(err),
    )
  },
})
smtp.on('error', (err) => console.error('smtp-server:', err))
await new Promise((resolve, reject) => {
  smtp.once('error', reject)
  smtp.listen(SMTP_PORT, '127.0.0.1', () => {
    smtp.off('error', reject)
    resolve()
  })
})

const summary = () => received.map((r) => `${r.taken ? 'taken' : 'NEW'} ${r.rcpt.join(',')}: ${r.mail.subject}`).join('\n  ')

// nextMail resolves with the oldest mail to address not taken yet, parsed
// (see readMail), and takes it; it fails after MAIL_TIMEOUT.
function nextMail(address, timeout = MAIL_TIMEOUT) {
  address = address.toLowerCase()
  return new Promise((resolve, reject) => {
    const check = () => {
      const r = received.find((r) => !r.taken && r.rcpt.includes(address))
      if (!r) return false
      r.taken = true
      cleanup()
      try {
        resolve(readMail(r.mail, address))
      } catch (err) {
        reject(err)
      }
      return true
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`no mail to ${address} within ${timeout} ms; received:\n  ${summary()}`))
    }, timeout)
    const cleanup = () => {
      clearTimeout(timer)
      waiters.delete(check)
    }
    waiters.add(check)
    check()
  })
}

// mailsTo counts the mails to address received so far (taken or not).
const mailsTo = (address) => received.filter((r) => r.rcpt.includes(address.toLowerCase())).length

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// readMail checks a mail's shape (a text and an HTML part, addressed to
// the address, from --smtp-from) and returns what a user acts on: the
// link to /verify (null if none, as in the reauthentication mail) with its
// token, type and redirect_to, and the 6-digit code, the same in both parts.
function readMail(mail, address) {
  const subject = mail.subject ?? ''
  assert.ok(mail.text, `mail "${subject}" to ${address} has no text/plain part`)
  assert.ok(mail.html, `mail "${subject}" to ${address} has no HTML part`)
  assert.deepEqual(mail.to?.value?.map((a) => a.address.toLowerCase()), [address], 'To: header')
  assert.equal(mail.from?.value?.[0]?.address, 'noreply@keyshard.test', 'From: is serve --smtp-from')
  const decode = (s) => s.replace(/&amp;/g, '&').replace(/&#43;/g, '+').replace(/&#39;/g, "'").replace(/&quot;/g, '"')
  const textLinks = [...mail.text.matchAll(/https?:\/\/[^\s"<>]+\/verify\?[^\s"<>]+/g)].map((m) => m[0])
  const htmlLinks = [...mail.html.matchAll(/href="([^"]*\/verify\?[^"]*)"/g)].map((m) => decode(m[1]))
  const codes = (s) => [...new Set([...s.replace(/https?:\/\/[^\s"<>]+/g, ' ').matchAll(/(?<![\w-])\d{6}(?![\w-])/g)].map((m) => m[0]))]
  const textCodes = codes(mail.text)
  const htmlCodes = codes(mail.html.replace(/<[^>]*>/g, ' '))
  assert.equal(textCodes.length, 1, `one 6-digit code in the text part of "${subject}": ${mail.text}`)
  assert.deepEqual(htmlCodes, textCodes, `the HTML part of "${subject}" carries the same code: ${mail.html}`)
  const out = { subject, text: mail.text, html: mail.html, code: textCodes[0], link: null }
  assert.equal(htmlLinks.length, textLinks.length, `as many links in the HTML part as in the text part of "${subject}"`)
  if (textLinks.length === 0) return out
  assert.equal(textLinks.length, 1, `one link in "${subject}": ${textLinks}`)
  assert.equal(htmlLinks[0], textLinks[0], `the HTML part of "${subject}" carries the same link`)
  const u = new URL(textLinks[0])
  Object.assign(out, {
    link: textLinks[0],
    linkBase: `${u.origin}${u.pathname}`,
    token: u.searchParams.get('token'),
    type: u.searchParams.get('type'),
    redirectTo: u.searchParams.get('redirect_to'),
  })
  // The link token has GoTrue's shape (56 hex, pkce_-prefixed for a PKCE
  // link) but is random: GoTrue's hex(SHA-224(address + code)) would let
  // anyone who knows the address walk the codes through the link.
  assert.match(out.token.replace(/^pkce_/, ''), /^[0-9a-f]{56}$/)
  assert.notEqual(out.token.replace(/^pkce_/, ''), sha224(address + out.code), 'the link token is not derived from the code')
  return out
}

const sha224 = (s) => createHash('sha224').update(s).digest('hex')

// ---------------------------------------------------------------------------
// Clients and the platform API.

const timedFetch = (input, init = {}) => fetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT) })

const client = (T, options = {}) =>
  new AuthClient({ url: T.url, autoRefreshToken: false, persistSession: false, detectSessionInUrl: false, fetch: timedFetch, ...options })

const adminOf = (T) => client(T, { headers: { Authorization: `Bearer ${T.key}` } }).admin

// A storage for a PKCE client, readable by the test (the code verifier).
function memoryStorage() {
  const m = new Map()
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  }
}

async function platform(method, path, body) {
  const r = await timedFetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await r.text()
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`)
  return text ? JSON.parse(text) : null
}

const configure = (T, patch) => platform('PATCH', `/t/${T.slug}/admin/config/auth`, patch)

// The tenants' config: confirmation mails (autoconfirm off), links to the
// test's site, the mail limits relaxed (flow 10 sets smtp_max_frequency
// for itself).
const CONFIG = {
  mailer_autoconfirm: false,
  site_url: SITE,
  uri_allow_list: `${SITE}/**`,
  smtp_max_frequency: 0,
  rate_limit_email_sent: 1000,
  security_update_password_require_reauthentication: false,
  mailer_secure_email_change_enabled: true,
}

const created = []
async function makeTenant(tag, backend) {
  const slug = `mail-${tag}-${process.pid}`
  await platform('POST', '/admin/tenants', { slug, backend })
  created.push(slug)
  await platform('POST', `/admin/tenants/${slug}/approve`)
  const { service_key: key } = await platform('POST', `/admin/tenants/${slug}/service-key`)
  const T = { tag, slug, backend, key, url: `${BASE}/t/${slug}` }
  await configure(T, CONFIG)
  const settings = await (await timedFetch(`${T.url}/settings`)).json()
  assert.equal(settings.mailer_autoconfirm, false, 'the tenant sends confirmation mails')
  return T
}

after(async () => {
  for (const slug of created) {
    await platform('DELETE', `/admin/tenants/${slug}`).catch((err) => console.error(`deleting ${slug}:`, err.message))
  }
  await new Promise((resolve) => smtp.close(resolve))
})

// A fresh address per flow, tenant and run.
const addr = (T, flow) => `${flow}-${T.tag}-${RUN}@example.com`.toLowerCase()

async function confirmedUser(T, email, password = PASSWORD) {
  const { data, error } = await adminOf(T).createUser({ email, password, email_confirm: true })
  assert.equal(error, null)
  return data.user
}

async function signedIn(T, email, password = PASSWORD) {
  const c = client(T)
  const { error } = await c.signInWithPassword({ email, password })
  assert.equal(error, null)
  return c
}

// follow GETs a mailed link as a browser would, without following the
// redirect: 303 and where it goes.
async function follow(link) {
  const r = await timedFetch(link, { redirect: 'manual' })
  await r.arrayBuffer()
  assert.equal(r.status, 303, `GET ${link}`)
  return new URL(r.headers.get('location'))
}

// fragment: the parameters of a redirect's #fragment.
const fragment = (u) => new URLSearchParams(u.hash.slice(1))

// ---------------------------------------------------------------------------
// The flows, on one tenant, in order.

async function flows(t, T) {
  await t.test('1. resetPasswordForEmail → code from the mail → verifyOtp(recovery) → updateUser({password})', async () => {
    const email = addr(T, 'recover')
    await confirmedUser(T, email)
    const c = client(T)
    const { error } = await c.resetPasswordForEmail(email, { redirectTo: `${SITE}/reset` })
    assert.equal(error, null)
    const m = await nextMail(email)
    assert.equal(m.linkBase, `${T.url}/verify`)
    assert.equal(m.type, 'recovery')
    assert.equal(m.redirectTo, `${SITE}/reset`)

    const wrong = await client(T).verifyOtp({ email, token: otherCode(m.code), type: 'recovery' })
    assert.equal(wrong.error?.code, 'otp_expired')
    assert.equal(wrong.error?.status, 403)

    const v = await c.verifyOtp({ email, token: m.code, type: 'recovery' })
    assert.equal(v.error, null)
    assert.ok(v.data.session?.access_token)
    assert.equal(v.data.user.email, email)
    const newPassword = 'a brand new password'
    const up = await c.updateUser({ password: newPassword })
    assert.equal(up.error, null)

    const good = await client(T).signInWithPassword({ email, password: newPassword })
    assert.equal(good.error, null)
    assert.ok(good.data.session?.access_token)
    const old = await client(T).signInWithPassword({ email, password: PASSWORD })
    assert.equal(old.error?.code, 'invalid_credentials')

    const reused = await client(T).verifyOtp({ email, token: m.code, type: 'recovery' })
    assert.equal(reused.error?.code, 'otp_expired', 'a code works once')
  })

  await t.test('2. signInWithOtp: a new address becomes a user (confirmation mail); a confirmed one gets a magic link', async () => {
    const email = addr(T, 'otp')
    const c = client(T)
    const { data, error } = await c.signInWithOtp({ email, options: { data: { plan: 'otp' } } })
    assert.equal(error, null)
    assert.equal(data.session, null)
    const m = await nextMail(email)
    assert.equal(m.type, 'signup', 'a new address gets a confirmation mail, as GoTrue sends')
    const v = await c.verifyOtp({ email, token: m.code, type: 'email' })
    assert.equal(v.error, null)
    assert.ok(v.data.session?.access_token)
    assert.equal(v.data.user.email, email)
    assert.ok(v.data.user.email_confirmed_at)
    assert.equal(v.data.user.user_metadata.plan, 'otp')

    // Now confirmed: a sign-in (magic link) mail.
    const c2 = client(T)
    const again = await c2.signInWithOtp({ email, options: { shouldCreateUser: false } })
    assert.equal(again.error, null)
    const m2 = await nextMail(email)
    assert.equal(m2.type, 'magiclink')
    assert.notEqual(m2.subject, m.subject)
    const v2 = await c2.verifyOtp({ email, token: m2.code, type: 'email' })
    assert.equal(v2.error, null)
    assert.ok(v2.data.session?.access_token)
    assert.equal(v2.data.user.id, v.data.user.id)
    const u = await c2.getUser()
    assert.equal(u.data.user?.email, email)
  })

  await t.test('3. signUp unconfirmed → email_not_confirmed → resend → only the newest code works', async () => {
    const email = addr(T, 'signup')
    const c = client(T)
    const up = await c.signUp({ email, password: PASSWORD, options: { emailRedirectTo: `${SITE}/welcome` } })
    assert.equal(up.error, null)
    assert.equal(up.data.session, null, 'no session before the address is confirmed')
    assert.equal(up.data.user?.email, email)
    assert.ok(!up.data.user.email_confirmed_at)
    assert.ok(up.data.user.confirmation_sent_at)
    const m1 = await nextMail(email)
    assert.equal(m1.type, 'signup')
    assert.equal(m1.redirectTo, `${SITE}/welcome`)

    const early = await client(T).signInWithPassword({ email, password: PASSWORD })
    assert.equal(early.error?.code, 'email_not_confirmed')
    assert.equal(early.error?.status, 400)

    const re = await c.resend({ type: 'signup', email })
    assert.equal(re.error, null)
    const m2 = await nextMail(email)
    assert.equal(m2.type, 'signup')
    assert.notEqual(m2.code, m1.code)

    const first = await client(T).verifyOtp({ email, token: m1.code, type: 'signup' })
    assert.equal(first.error?.code, 'otp_expired', 'the first code was replaced by the resent one')
    const v = await c.verifyOtp({ email, token: m2.code, type: 'signup' })
    assert.equal(v.error, null)
    assert.ok(v.data.session?.access_token)
    assert.ok(v.data.user.email_confirmed_at)

    const login = await client(T).signInWithPassword({ email, password: PASSWORD })
    assert.equal(login.error, null)
    assert.ok(login.data.session?.access_token)
  })

  await t.test('3b. the mailed link (GET /verify): 303 to an allowed redirect_to with the session; else the site URL', async () => {
    const email = addr(T, 'link')
    const up = await client(T).signUp({ email, password: PASSWORD, options: { emailRedirectTo: `${SITE}/welcome` } })
    assert.equal(up.error, null)
    const m = await nextMail(email)
    const to = await follow(m.link)
    assert.equal(`${to.origin}${to.pathname}`, `${SITE}/welcome`)
    const f = fragment(to)
    assert.equal(f.get('type'), 'signup')
    assert.equal(f.get('token_type'), 'bearer')
    assert.ok(f.get('refresh_token'))
    const u = await client(T).getUser(f.get('access_token'))
    assert.equal(u.error, null)
    assert.equal(u.data.user.email, email)
    assert.ok(u.data.user.email_confirmed_at)

    const again = await follow(m.link)
    assert.equal(fragment(again).get('error_code'), 'otp_expired', 'a link works once')
    assert.equal(fragment(again).get('access_token'), null)

    // A redirect_to outside uri_allow_list: the link goes to site_url.
    const other = addr(T, 'link-evil')
    assert.equal((await client(T).signUp({ email: other, password: PASSWORD, options: { emailRedirectTo: 'https://evil.example/steal' } })).error, null)
    const m2 = await nextMail(other)
    assert.equal(m2.redirectTo, SITE)
    const to2 = await follow(m2.link)
    assert.equal(to2.origin, SITE)
    assert.ok(fragment(to2).get('access_token'))
  })

  await t.test('4. admin.inviteUserByEmail → mail → verifyOtp(invite) → session', async () => {
    const email = addr(T, 'invite')
    const inv = await adminOf(T).inviteUserByEmail(email, { data: { team: 'blue' } })
    assert.equal(inv.error, null)
    assert.equal(inv.data.user.email, email)
    assert.ok(inv.data.user.invited_at)
    assert.deepEqual(inv.data.user.user_metadata, { team: 'blue' })
    const m = await nextMail(email)
    assert.equal(m.type, 'invite')
    const c = client(T)
    const v = await c.verifyOtp({ email, token: m.code, type: 'invite' })
    assert.equal(v.error, null)
    assert.ok(v.data.session?.access_token)
    assert.equal(v.data.user.id, inv.data.user.id)
    assert.ok(v.data.user.invited_at)
    assert.ok(v.data.user.email_confirmed_at)
    const u = await c.getUser()
    assert.equal(u.data.user?.user_metadata.team, 'blue')
  })

  await t.test('5. admin.generateLink (magiclink, recovery, signup): the link and code, and no mail', async () => {
    const admin = adminOf(T)
    const email = addr(T, 'genlink')
    const user = await confirmedUser(T, email)

    const ml = await admin.generateLink({ type: 'magiclink', email })
    assert.equal(ml.error, null)
    const p = ml.data.properties
    assert.equal(ml.data.user.id, user.id)
    assert.equal(p.verification_type, 'magiclink')
    assert.match(p.email_otp, /^\d{6}$/)
    assert.match(p.hashed_token, /^[0-9a-f]{56}$/)
    assert.notEqual(p.hashed_token, sha224(email + p.email_otp))
    const link = new URL(p.action_link)
    assert.equal(`${link.origin}${link.pathname}`, `${T.url}/verify`)
    assert.equal(link.searchParams.get('token'), p.hashed_token)
    assert.equal(link.searchParams.get('type'), 'magiclink')
    const c = client(T)
    const v = await c.verifyOtp({ token_hash: p.hashed_token, type: 'magiclink' })
    assert.equal(v.error, null)
    assert.ok(v.data.session?.access_token)
    assert.equal(v.data.user.id, user.id)

    const rec = await admin.generateLink({ type: 'recovery', email })
    assert.equal(rec.error, null)
    assert.equal(rec.data.properties.verification_type, 'recovery')
    const v2 = await client(T).verifyOtp({ email, token: rec.data.properties.email_otp, type: 'recovery' })
    assert.equal(v2.error, null)
    assert.ok(v2.data.session?.access_token)

    const fresh = addr(T, 'genlink-signup')
    const su = await admin.generateLink({ type: 'signup', email: fresh, password: PASSWORD, options: { redirectTo: `${SITE}/welcome` } })
    assert.equal(su.error, null)
    assert.equal(su.data.user.email, fresh)
    assert.ok(!su.data.user.email_confirmed_at)
    assert.equal(su.data.properties.redirect_to, `${SITE}/welcome`)
    const to = await follow(su.data.properties.action_link)
    assert.equal(`${to.origin}${to.pathname}`, `${SITE}/welcome`)
    assert.ok(fragment(to).get('access_token'))
    const login = await client(T).signInWithPassword({ email: fresh, password: PASSWORD })
    assert.equal(login.error, null, 'the followed signup link confirmed the address')

    const unknown = await admin.generateLink({ type: 'recovery', email: addr(T, 'genlink-nobody') })
    assert.equal(unknown.error?.code, 'user_not_found')
    assert.equal(unknown.error?.status, 404)

    // No mail: a mail asked for afterwards on the same tenant arrives, and
    // none to these addresses (the last test checks again at the end).
    const sentinel = addr(T, 'genlink-sentinel')
    await confirmedUser(T, sentinel)
    assert.equal((await client(T).resetPasswordForEmail(sentinel)).error, null)
    await nextMail(sentinel)
    assert.equal(mailsTo(email), 0, 'generate_link sends no mail')
    assert.equal(mailsTo(fresh), 0, 'generate_link sends no mail')
  })

  await t.test('5b. generateLink magiclink of an unknown address is a signup link that makes the user (GoTrue)', async () => {
    const email = addr(T, 'genlink-new')
    const { data, error } = await adminOf(T).generateLink({ type: 'magiclink', email })
    assert.equal(error, null)
    assert.equal(data.properties.verification_type, 'signup')
    assert.equal(data.user.email, email)
    assert.equal(new URL(data.properties.action_link).searchParams.get('type'), 'signup')
    const v = await client(T).verifyOtp({ token_hash: data.properties.hashed_token, type: 'signup' })
    assert.equal(v.error, null)
    assert.ok(v.data.session?.access_token)
  })

  await t.test('6. PKCE: signInWithOtp → pkce_ link → 303 ?code= → exchangeCodeForSession, once', async () => {
    const email = addr(T, 'pkce')
    await confirmedUser(T, email)
    const storage = memoryStorage()
    const pk = client(T, { flowType: 'pkce', persistSession: true, storage })
    const { error } = await pk.signInWithOtp({ email, options: { emailRedirectTo: `${SITE}/welcome`, shouldCreateUser: false } })
    assert.equal(error, null)
    const m = await nextMail(email)
    assert.match(m.token, /^pkce_[0-9a-f]{56}$/)
    assert.equal(m.type, 'magiclink')
    const to = await follow(m.link)
    assert.equal(`${to.origin}${to.pathname}`, `${SITE}/welcome`)
    assert.equal(to.hash, '', 'PKCE: no session in the fragment')
    const code = to.searchParams.get('code')
    assert.ok(code, `no ?code= in ${to}`)

    const [verifierKey] = [...storage.map.keys()].filter((k) => k.endsWith('-code-verifier'))
    assert.ok(verifierKey, 'auth-js stored the code verifier')
    const verifier = storage.map.get(verifierKey)
    const ex = await pk.exchangeCodeForSession(code)
    assert.equal(ex.error, null)
    assert.ok(ex.data.session?.access_token)
    assert.equal(ex.data.user.email, email)

    // A second exchange of the same code (with the right verifier put back).
    storage.setItem(verifierKey, verifier)
    const ex2 = await pk.exchangeCodeForSession(code)
    assert.equal(ex2.data.session, null)
    assert.equal(ex2.error?.code, 'flow_state_not_found')
    assert.equal(ex2.error?.status, 404)
  })

  await t.test('6b. PKCE: resetPasswordForEmail → link → ?code= → recovery session → updateUser({password})', async () => {
    const email = addr(T, 'pkce-recover')
    await confirmedUser(T, email)
    const pk = client(T, { flowType: 'pkce', persistSession: true, storage: memoryStorage() })
    assert.equal((await pk.resetPasswordForEmail(email, { redirectTo: `${SITE}/reset` })).error, null)
    const m = await nextMail(email)
    assert.match(m.token, /^pkce_/)
    assert.equal(m.type, 'recovery')
    const to = await follow(m.link)
    assert.equal(`${to.origin}${to.pathname}`, `${SITE}/reset`)
    const ex = await pk.exchangeCodeForSession(to.searchParams.get('code'))
    assert.equal(ex.error, null)
    assert.equal(ex.data.redirectType, 'recovery')
    assert.equal(ex.data.user.email, email)
    const newPassword = 'pkce recovered password'
    assert.equal((await pk.updateUser({ password: newPassword })).error, null)
    assert.equal((await client(T).signInWithPassword({ email, password: newPassword })).error, null)
  })

  await t.test('6c. PKCE: a wrong code_verifier is 400 bad_code_verifier (GoTrue)', async () => {
    const email = addr(T, 'pkce-verifier')
    await confirmedUser(T, email)
    const storage = memoryStorage()
    const pk = client(T, { flowType: 'pkce', persistSession: true, storage })
    assert.equal((await pk.signInWithOtp({ email, options: { emailRedirectTo: `${SITE}/welcome` } })).error, null)
    const m = await nextMail(email)
    const code = (await follow(m.link)).searchParams.get('code')
    const [verifierKey] = [...storage.map.keys()].filter((k) => k.endsWith('-code-verifier'))
    storage.setItem(verifierKey, JSON.stringify('x'.repeat(64)))
    const ex = await pk.exchangeCodeForSession(code)
    assert.equal(ex.data.session, null)
    assert.equal(ex.error?.code, 'bad_code_verifier')
    assert.equal(ex.error?.status, 400)
  })

  await t.test('7. resetPasswordForEmail of an unknown address: no error, no mail', async () => {
    const email = addr(T, 'nobody')
    const { data, error } = await client(T).resetPasswordForEmail(email)
    assert.equal(error, null)
    assert.deepEqual(data, {})
    await sleep(2000)
    assert.equal(mailsTo(email), 0)
  })

  await t.test('8. updateUser({email}) → mails to both addresses → verifyOtp(email_change) with each', async () => {
    const oldEmail = addr(T, 'change-old')
    const newEmail = addr(T, 'change-new')
    await confirmedUser(T, oldEmail)
    const c = await signedIn(T, oldEmail)
    const up = await c.updateUser({ email: newEmail }, { emailRedirectTo: `${SITE}/changed` })
    assert.equal(up.error, null)
    assert.equal(up.data.user.email, oldEmail, 'not changed before confirmation')
    assert.equal(up.data.user.new_email, newEmail)
    assert.ok(up.data.user.email_change_sent_at)

    const [mNew, mOld] = await Promise.all([nextMail(newEmail), nextMail(oldEmail)])
    for (const m of [mNew, mOld]) {
      assert.equal(m.type, 'email_change')
      assert.equal(m.redirectTo, `${SITE}/changed`)
    }
    assert.ok(mOld.text.includes(newEmail), 'the mail to the current address names the new one')

    const half = await c.verifyOtp({ email: oldEmail, token: mOld.code, type: 'email_change' })
    assert.equal(half.error, null)
    assert.equal(half.data.session, null, 'the first confirmation alone makes no session')
    assert.equal((await c.getUser()).data.user?.email, oldEmail)

    const done = await c.verifyOtp({ email: newEmail, token: mNew.code, type: 'email_change' })
    assert.equal(done.error, null)
    assert.ok(done.data.session?.access_token)
    assert.equal(done.data.user.email, newEmail)
    const u = await c.getUser()
    assert.equal(u.data.user?.email, newEmail)
    assert.ok(!u.data.user.new_email)

    assert.equal((await client(T).signInWithPassword({ email: newEmail, password: PASSWORD })).error, null)
    assert.equal((await client(T).signInWithPassword({ email: oldEmail, password: PASSWORD })).error?.code, 'invalid_credentials')
  })

  await t.test('8b. PKCE: updateUser({email}) mails pkce_ links that end in ?code= (GoTrue)', async () => {
    const oldEmail = addr(T, 'pkce-change-old')
    const newEmail = addr(T, 'pkce-change-new')
    await confirmedUser(T, oldEmail)
    const pk = client(T, { flowType: 'pkce', persistSession: true, storage: memoryStorage() })
    assert.equal((await pk.signInWithPassword({ email: oldEmail, password: PASSWORD })).error, null)
    const up = await pk.updateUser({ email: newEmail }, { emailRedirectTo: `${SITE}/changed` })
    assert.equal(up.error, null)
    const [mNew, mOld] = await Promise.all([nextMail(newEmail), nextMail(oldEmail)])
    assert.match(mOld.token, /^pkce_/, 'the link to the current address is a PKCE link')
    assert.match(mNew.token, /^pkce_/, 'the link to the new address is a PKCE link')
    await follow(mOld.link) // the first half
    const to = await follow(mNew.link)
    assert.equal(to.hash, '', `no session in the fragment: ${to}`)
    assert.match(to.searchParams.get('code') ?? '', /^[0-9a-f-]{36}$/, `a PKCE code in the query: ${to}`)
    // auth-js 2.105's updateUser saves the session it already has, and
    // _saveSession removes the code verifier it just stored: this client
    // cannot exchange the code (api/mail_gotrue_test.go exchanges it with a
    // verifier it keeps). The change itself is applied by the second link:
    const me = await pk.getUser()
    assert.equal(me.data.user.email, newEmail)
  })

  await t.test('9. reauthenticate → code by mail → updateUser({password, nonce}); a wrong nonce is refused', async () => {
    const email = addr(T, 'reauth')
    await confirmedUser(T, email)
    const c = await signedIn(T, email)
    assert.equal((await c.reauthenticate()).error, null)
    const m = await nextMail(email)
    assert.equal(m.link, null, 'the reauthentication mail carries only the code')
    assert.ok(m.subject.includes(m.code), `the code is in the subject: ${m.subject}`)
    const p2 = 'second password here'
    const up = await c.updateUser({ password: p2, nonce: m.code })
    assert.equal(up.error, null)
    assert.equal((await client(T).signInWithPassword({ email, password: p2 })).error, null)

    await configure(T, { security_update_password_require_reauthentication: true })
    try {
      assert.equal((await c.reauthenticate()).error, null)
      const m2 = await nextMail(email)
      const p3 = 'third password here'
      const bad = await c.updateUser({ password: p3, nonce: otherCode(m2.code) })
      assert.equal(bad.error?.code, 'reauthentication_not_valid')
      assert.equal(bad.error?.status, 422)
      assert.equal((await client(T).signInWithPassword({ email, password: p3 })).error?.code, 'invalid_credentials', 'unchanged')
      const good = await c.updateUser({ password: p3, nonce: m2.code })
      assert.equal(good.error, null)
      assert.equal((await client(T).signInWithPassword({ email, password: p3 })).error, null)
    } finally {
      await configure(T, { security_update_password_require_reauthentication: false })
    }
  })

  await t.test('9b. updateUser with the current password is 422 same_password (GoTrue)', async () => {
    const email = addr(T, 'same-password')
    await confirmedUser(T, email)
    const c = await signedIn(T, email)
    const r = await c.updateUser({ password: PASSWORD })
    assert.equal(r.error?.code, 'same_password')
    assert.equal(r.error?.status, 422)
  })

  await t.test('10. smtp_max_frequency: a second recovery mail too soon is 429 over_email_send_rate_limit, known address or not', async () => {
    const known = addr(T, 'limit')
    const unknown = addr(T, 'limit-nobody')
    await confirmedUser(T, known)
    await configure(T, { smtp_max_frequency: 60 })
    try {
      for (const email of [known, unknown]) {
        const first = await client(T).resetPasswordForEmail(email)
        assert.equal(first.error, null, email)
        const second = await client(T).resetPasswordForEmail(email)
        assert.equal(second.error?.status, 429, email)
        assert.equal(second.error?.code, 'over_email_send_rate_limit', email)
        assert.match(second.error?.message, /^For security purposes, you can only request this after \d+ seconds\.$/)
      }
    } finally {
      await configure(T, { smtp_max_frequency: 0 })
    }
    await nextMail(known)
  })
}

// A 6-digit code that is not code.
const otherCode = (code) => String((Number(code) + 1) % 1_000_000).padStart(6, '0')

test('email flows (auth-js, mails over SMTP)', { concurrency: true, timeout: 120_000 }, async (t) => {
  const tenants = await Promise.all(BACKENDS.map((backend, i) => makeTenant('ab'[i], backend)))
  await Promise.all(tenants.map((T) => t.test(`tenant on ${T.backend} (${T.slug})`, (t) => flows(t, T))))
  await t.test('no mail arrived that no flow asked for (generate_link, unknown addresses, duplicates)', async () => {
    await sleep(1000)
    const extra = received.filter((r) => !r.taken)
    assert.equal(extra.length, 0, `mails nobody took:\n  ${summary()}`)
  })
})
