-- Put before apply.lua and read.lua when they are loaded (read_models._lua): what both use.

-- The best score of a sorted set ('' when empty): the lowest ask, the highest bid.
local function best(key, reverse)
  local found
  if reverse then
    found = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  else
    found = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  end
  if #found == 0 then return '' end
  return found[2]
end

