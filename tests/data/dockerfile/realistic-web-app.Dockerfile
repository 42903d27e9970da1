# syntax=docker/dockerfile:1
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-alpine AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev

FROM node:${NODE_VERSION}-alpine AS build
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY . .
RUN npm run build && \
    npm prune --production

FROM gcr.io/distroless/nodejs20 AS runtime
ENV NODE_ENV=production \
    PORT=3000
COPY --from=build --chown=1000:1000 /app/dist /app
USER 1000
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=2s --retries=5 \
  CMD ["/nodejs/bin/node", "/app/health.js"]
CMD ["/app/server.js"]
