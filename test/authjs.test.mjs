// The real @supabase/auth-js client against a live Keyshard server.
//
// Starts nothing itself: set KEYSHARD_TENANT_A_URL and KEYSHARD_TENANT_B_URL
// to the base URLs of two active tenants (http://HOST/t/{slug}), then run
// `node --test test/authjs.test.mjs`. test/authjs.sh sets everything up.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AuthClient } from '@supabase/auth-js'

const A = process.env.KEYSHARD_TENANT_A_URL
const B = process.env.KEYSHARD_TENANT_B_URL
if (!A || !B) {
  throw new Error('set KEYSHARD_TENANT_A_URL and KEYSHARD_TENANT_B_URL to two tenants\' base URLs')
}

const client = (url) =>
  new AuthClient({ url, autoRefreshToken: false, persistSession: false, detectSessionInUrl: false })

const email = `alice-${process.pid}-${Date.now()}@example.com`
const password = 'correct horse battery'

test('auth-js against keyshard', async (t) => {
  const a = client(A)
  const b = client(B)
  let session

  await t.test('signUp returns a session (auto-confirm)', async () => {
    const { data, error } = await a.signUp({ email, password, options: { data: { plan: 'free' } } })
    assert.equal(error, null)
    assert.ok(data.session?.access_token)
    assert.equal(data.user.email, email)
    assert.equal(data.user.user_metadata.plan, 'free')
    assert.equal(data.user.identities.length, 1)
  })

  await t.test('signUp of a taken email fails with user_already_exists', async () => {
    const { error } = await client(A).signUp({ email, password })
    assert.equal(error?.code, 'user_already_exists')
    assert.equal(error?.status, 422)
  })

  await t.test('signUp with a weak password fails with weak_password', async () => {
    const { error } = await client(A).signUp({ email: `weak-${email}`, password: 'abc' })
    assert.equal(error?.code, 'weak_password')
    assert.deepEqual(error?.reasons, ['length'])
  })

  await t.test('signInWithPassword', async () => {
    const { data, error } = await a.signInWithPassword({ email, password })
    assert.equal(error, null)
    assert.equal(data.user.email, email)
    session = data.session
    assert.ok(session.refresh_token)
    assert.equal(session.token_type, 'bearer')
  })

  await t.test('wrong password fails with invalid_credentials', async () => {
    const { data, error } = await client(A).signInWithPassword({ email, password: 'wrong password' })
    assert.equal(data.session, null)
    assert.equal(error?.code, 'invalid_credentials')
    assert.equal(error?.status, 400)
  })

  await t.test('getUser', async () => {
    const { data, error } = await a.getUser()
    assert.equal(error, null)
    assert.equal(data.user.email, email)
    assert.equal(data.user.aud, 'authenticated')
  })

  await t.test('updateUser', async () => {
    const { data, error } = await a.updateUser({ data: { plan: 'pro' } })
    assert.equal(error, null)
    assert.equal(data.user.user_metadata.plan, 'pro')
    const again = await a.getUser()
    assert.equal(again.data.user.user_metadata.plan, 'pro')
  })

  await t.test('refreshSession rotates the refresh token', async () => {
    const { data, error } = await a.refreshSession()
    assert.equal(error, null)
    assert.ok(data.session.access_token)
    assert.notEqual(data.session.refresh_token, session.refresh_token)
    assert.equal(data.user.email, email)
    session = data.session
  })

  await t.test('a session of tenant A is rejected by tenant B', async () => {
    const got = await b.getUser(session.access_token)
    assert.equal(got.data.user, null)
    assert.equal(got.error?.code, 'bad_jwt')
    assert.equal(got.error?.status, 403)
    const refreshed = await b.refreshSession({ refresh_token: session.refresh_token })
    assert.equal(refreshed.data.session, null)
    assert.equal(refreshed.error?.code, 'refresh_token_not_found')
    const signIn = await b.signInWithPassword({ email, password })
    assert.equal(signIn.error?.code, 'invalid_credentials')
  })

  await t.test('signOut ends the session', async () => {
    const accessToken = session.access_token
    const { error } = await a.signOut()
    assert.equal(error, null)
    // auth-js turns the server's 403 session_not_found into AuthSessionMissingError.
    const got = await client(A).getUser(accessToken)
    assert.equal(got.data.user, null)
    assert.equal(got.error?.name, 'AuthSessionMissingError')
    const refreshed = await client(A).refreshSession({ refresh_token: session.refresh_token })
    assert.equal(refreshed.error?.code, 'refresh_token_not_found')
  })
})
