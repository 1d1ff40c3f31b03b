-- Answers one query from the current generation of the read models, in one round trip.
-- KEYS[1] points to the current generation; ARGV[1] names the query, the rest are its
-- arguments. Returns the answer as JSON (strings as Redis holds them; the caller shapes and
-- types them), or false when the read model cannot answer (no generation yet, or the entity
-- is not projected), so the caller asks SQL.

local generation = redis.call('GET', KEYS[1])
if not generation then return false end
local p = 'rm:' .. generation .. ':'
local query = ARGV[1]

local function hash(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end

local function product_name(product_id)
  return redis.call('HGET', p .. 'product:' .. product_id, 'name')
end

local function page(key, reverse, after, limit)
  if reverse then
    local from = '+'
    if after ~= '' then from = '(' .. after end
    return redis.call('ZREVRANGEBYLEX', key, from, '-', 'LIMIT', 0, limit)
  end
  local from = '-'
  if after ~= '' then from = '(' .. after end
  return redis.call('ZRANGEBYLEX', key, from, '+', 'LIMIT', 0, limit)
end

local function tail_id(member)
  return string.sub(member, -26)
end

-- An order's voucher image's S3 key, derived as the upload slot made it (the seller's own
-- upload, under `prefix`), or nil once the image is deleted.
local function image_key(prefix, seller_id, image_id)
  if redis.call('EXISTS', p .. 'image:' .. image_id) == 1 then return nil end
  return prefix .. seller_id .. '/' .. image_id
end

if query == 'user' then
  local h = hash(p .. 'user:' .. ARGV[2])
  if not h or not h.email or not h._v then return false end
  return cjson.encode(h)

elseif query == 'product' then
  -- Rendered by the apply script (see its render_detail).
  return redis.call('HGET', p .. 'detail:' .. ARGV[2], 'json')

elseif query == 'products' then
  -- ARGV: sort, category ('' for all), after (a list member, '' for the first page), limit
  local sort, category = ARGV[2], ARGV[3]
  local key = p .. 'list:' .. sort .. ':*'
  if category ~= '' then key = p .. 'list:' .. sort .. ':c:' .. category end
  -- Each product's summary as the apply script rendered it (JSON), joined as they are.
  local items = {}
  for _, member in ipairs(page(key, sort == 'latest', ARGV[4], tonumber(ARGV[5]))) do
    local listed = redis.call('HGET', p .. 'detail:' .. tail_id(member), 'summary')
    if not listed then return false end
    items[#items + 1] = listed
  end
  return '[[' .. table.concat(items, ',') .. ']]'

elseif query == 'rankings' then
  local ranked = redis.call('ZRANGE', p .. 'rank:' .. ARGV[2], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
  local items = {}
  for i = 1, #ranked, 2 do
    local name = product_name(ranked[i])
    if not name then return false end
    items[#items + 1] = {ranked[i], name, ranked[i + 1]}
  end
  return cjson.encode({items})

elseif query == 'list' then
  -- The caller's own items, newest first: ARGV: user, limit, then one or more lists, each
  -- as its name (hist:buy:bidding, coupons...), the kind of its documents, how many fields
  -- and the fields wanted of each document (the first one always present in a projected
  -- document). Several lists are merged (their members all sort by creation time). The
  -- user must be projected, or an empty list could be one not projected yet. Each item is
  -- [which list (1, 2...), id, its product's name (false: no product), [the fields' values
  -- in the order asked, false where absent]]: by position, as a page of 50 costs its
  -- encoding and decoding per item and per field name.
  local user_id, limit = ARGV[2], tonumber(ARGV[3])
  if redis.call('EXISTS', p .. 'user:' .. user_id) == 0 then return false end
  local lists, found = {}, {}
  local i = 4
  while i <= #ARGV do
    local list, kind, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    local fields, product_at = {}, nil
    for j = 1, count do
      fields[j] = ARGV[i + 2 + j]
      if fields[j] == 'product_id' then product_at = j end
    end
    i = i + 3 + count
    lists[#lists + 1] = {p .. kind .. ':', fields, product_at}
    for _, member in ipairs(page(p .. list .. ':' .. user_id, true, '', limit)) do
      found[#found + 1] = {member, #lists}
    end
  end
  if #lists > 1 then table.sort(found, function(a, b) return a[1] > b[1] end) end
  local items, names = {}, {}
  for n = 1, math.min(limit, #found) do
    local listed = lists[found[n][2]]
    local id = tail_id(found[n][1])
    local values = redis.call('HMGET', listed[1] .. id, unpack(listed[2]))
    if not values[1] then return false end
    local name = false
    local product_id = listed[3] and values[listed[3]]
    if product_id then
      -- A page often shows one product several times: its name is read once.
      name = names[product_id] or product_name(product_id)
      if not name then return false end
      names[product_id] = name
    end
    items[n] = {found[n][2], id, name, values}
  end
  return cjson.encode({items})

elseif query == 'queue' then
  -- An admins' queue (inspections, disputes), oldest first: ARGV: the queue, limit, the
  -- images' key prefix. Each order's document, with its product's name and its voucher
  -- image's S3 key.
  local items = {}
  local key = p .. 'queue:' .. ARGV[2]
  for _, member in ipairs(page(key, false, '', tonumber(ARGV[3]))) do
    local doc = hash(p .. 'order:' .. tail_id(member))
    if not doc or not doc.created_us then return false end
    doc.id = tail_id(member)
    doc.product_name = product_name(doc.product_id)
    if not doc.product_name then return false end
    if not doc.seller_id or not doc.image_id then return false end
    doc.image_key = image_key(ARGV[4], doc.seller_id, doc.image_id)
    items[#items + 1] = doc
  end
  return cjson.encode({items})

elseif query == 'order' then
  local doc = hash(p .. 'order:' .. ARGV[2])
  if not doc or not doc.created_us then return false end
  doc.product_name = product_name(doc.product_id)
  if not doc.product_name then return false end
  return cjson.encode(doc)

elseif query == 'gifticon' then
  -- ARGV: the order, the images' key prefix.
  local h = redis.call(
    'HMGET', p .. 'order:' .. ARGV[2], 'buyer_id', 'seller_id', 'image_id', 'created_us',
    'delivered_at'
  )
  if not h[1] or not h[2] or not h[3] or not h[4] then return false end
  local key = image_key(ARGV[3], h[2], h[3])
  if not key then return false end -- gone: SQL says so
  return cjson.encode({h[1], h[2], key, h[5] or ''})
end
return redis.error_reply('unknown read-model query ' .. tostring(query))
